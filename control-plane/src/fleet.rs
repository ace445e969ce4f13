//! The node registry: who is in the fleet, what they run, and whether they are alive.
//!
//! Online comes from live heartbeats; offline from a node's last will or clean shutdown
//! (at once) or from an overdue heartbeat (the sweeper). Records are kept in memory for
//! fast reads and written through to the store.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use wedge_proto::messages::{EventKind, Heartbeat, NodeEvent};

use crate::model::{Liveness, NodeRecord};
use crate::store::{self, Store};

/// What a heartbeat changed, so the caller knows whether to recompute desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// First time we hear of this node.
    pub new: bool,
    /// Its labels differ from what we knew (deployment selectors may now match).
    pub labels_changed: bool,
}

/// A node whose telemetry buffer is fuller than this share of its quota is degraded.
pub const BUFFER_DEGRADED_RATIO: f64 = 0.8;

/// A node whose data disk has less than this share free, and less than
/// [`DISK_FREE_MIN_BYTES`], is degraded. Both must hold: 5 % of a 4 GB card is nearly full,
/// but 5 % of a 250 GB disk is 12 GB, room for weeks of buffered telemetry.
pub const DISK_FREE_MIN_RATIO: f64 = 0.05;
/// See [`DISK_FREE_MIN_RATIO`].
pub const DISK_FREE_MIN_BYTES: u64 = 1 << 30;

/// A node with less than this share of its memory available, and less than
/// [`MEMORY_AVAILABLE_MIN_BYTES`], is degraded (same reasoning as for the disk).
pub const MEMORY_AVAILABLE_MIN_RATIO: f64 = 0.05;
/// See [`MEMORY_AVAILABLE_MIN_RATIO`].
pub const MEMORY_AVAILABLE_MIN_BYTES: u64 = 256 << 20;

/// Free space is short when below both the share of the total and the absolute floor.
fn short(free: u64, total: u64, min_ratio: f64, min_bytes: u64) -> bool {
    total > 0 && (free as f64) < total as f64 * min_ratio && free < min_bytes
}

/// What is wrong with a node, judged from its heartbeat (pure).
pub fn problems(hb: &Heartbeat) -> Vec<String> {
    let mut out: Vec<String> = hb
        .modules
        .iter()
        .filter(|m| m.state == wedge_proto::messages::ModuleState::Failed)
        .map(|m| match &m.last_error {
            Some(e) => format!("module {} failing: {e}", m.name),
            None => format!("module {} failing", m.name),
        })
        .collect();
    let r = &hb.resources;
    if short(
        r.disk_free_bytes,
        r.disk_total_bytes,
        DISK_FREE_MIN_RATIO,
        DISK_FREE_MIN_BYTES,
    ) {
        out.push(format!(
            "disk {}% full ({} MiB free)",
            100 - r.disk_free_bytes * 100 / r.disk_total_bytes,
            r.disk_free_bytes >> 20
        ));
    }
    if short(
        r.memory_available_bytes,
        r.memory_total_bytes,
        MEMORY_AVAILABLE_MIN_RATIO,
        MEMORY_AVAILABLE_MIN_BYTES,
    ) {
        out.push(format!(
            "memory {}% used ({} MiB available)",
            100 - r.memory_available_bytes * 100 / r.memory_total_bytes,
            r.memory_available_bytes >> 20
        ));
    }
    let b = &hb.buffer;
    if b.quota_bytes > 0 && b.bytes as f64 > b.quota_bytes as f64 * BUFFER_DEGRADED_RATIO {
        out.push(format!(
            "telemetry buffer {}% full ({} records waiting)",
            b.bytes * 100 / b.quota_bytes,
            b.pending
        ));
    }
    out
}

/// Events kept per node (newest last); older ones are dropped.
pub const EVENTS_PER_NODE: usize = 200;

/// Something that happened to or on a node.
#[derive(Debug, Clone, PartialEq)]
pub enum FleetEvent {
    /// The node came online.
    Online,
    /// The node went offline, and why.
    Offline { reason: String },
    /// Online but something is wrong.
    Degraded { problems: Vec<String> },
    /// Nothing is wrong any more.
    Recovered,
    /// Reported by the node itself.
    Node(NodeEvent),
}

/// An event with the control plane's time of receipt.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub received_ms: u64,
    pub event: FleetEvent,
}

/// A node's record and, once asked for, its rendering for the API (dropped on every
/// change). Listing 10,000 nodes then re-renders only those that changed since the last
/// listing instead of all of them.
#[derive(Debug)]
struct Entry {
    record: NodeRecord,
    rendered: OnceLock<Arc<[u8]>>,
}

impl Entry {
    fn new(record: NodeRecord) -> Self {
        Self {
            record,
            rendered: OnceLock::new(),
        }
    }

    /// The record, to change: the rendering is stale from now on.
    fn change(&mut self) -> &mut NodeRecord {
        self.rendered = OnceLock::new();
        &mut self.record
    }
}

/// The registry. Share it behind an `Arc`.
#[derive(Debug)]
pub struct Fleet {
    nodes: RwLock<BTreeMap<String, Entry>>,
    events: Mutex<HashMap<String, VecDeque<EventRecord>>>,
    store: Store,
}

impl Fleet {
    /// Loads the registry from the store.
    pub fn load(store: Store) -> store::Result<Self> {
        let nodes = store
            .nodes()?
            .into_iter()
            .map(|n| (n.id.clone(), Entry::new(n)))
            .collect();
        Ok(Self {
            nodes: RwLock::new(nodes),
            events: Mutex::new(HashMap::new()),
            store,
        })
    }

    fn record(&self, id: &str, now_ms: u64, event: FleetEvent) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let ring = events.entry(id.to_string()).or_default();
        if ring.len() == EVENTS_PER_NODE {
            ring.pop_front();
        }
        ring.push_back(EventRecord {
            received_ms: now_ms,
            event,
        });
    }

    /// Records an event a node reported; `false` for an unknown node (dropped).
    pub fn node_event(&self, id: &str, event: NodeEvent, now_ms: u64) -> bool {
        if !self.read().contains_key(id) {
            return false;
        }
        if let EventKind::ModuleFailed { error } = &event.kind {
            tracing::info!(node = id, module = ?event.module, error, "module failed on node");
        }
        self.record(id, now_ms, FleetEvent::Node(event));
        true
    }

    /// The node's recent events, oldest first; `None` for an unknown node.
    pub fn events(&self, id: &str) -> Option<Vec<EventRecord>> {
        if !self.read().contains_key(id) {
            return None;
        }
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        Some(
            events
                .get(id)
                .map(|r| r.iter().cloned().collect())
                .unwrap_or_default(),
        )
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        // Poisoning only follows a panic in another thread; the map itself is still valid.
        self.nodes.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.nodes.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a heartbeat. A `live` one marks the node online; a retained one (replayed
    /// by the broker when we subscribe) only refreshes what it runs.
    pub fn heartbeat(&self, hb: Heartbeat, live: bool, now_ms: u64) -> store::Result<Seen> {
        let node = hb.node_id.clone();
        let (change, seen) = {
            let mut nodes = self.write();
            let (record, seen) = match nodes.get_mut(&node) {
                Some(e) => {
                    let labels_changed = e.record.labels != hb.labels;
                    (
                        e.change(),
                        Seen {
                            new: false,
                            labels_changed,
                        },
                    )
                }
                None => {
                    let entry = nodes
                        .entry(node.clone())
                        .or_insert(Entry::new(unheard(&node, now_ms)));
                    (
                        &mut entry.record,
                        Seen {
                            new: true,
                            labels_changed: true,
                        },
                    )
                }
            };
            (apply(record, hb, live, now_ms), seen)
        };
        if change.came_online {
            self.record(&node, now_ms, FleetEvent::Online);
        }
        if let Some(event) = change.health {
            self.record(&node, now_ms, event);
        }
        if let Some(record) = change.persist {
            self.store.put_node(&record)?;
        }
        Ok(seen)
    }

    /// Marks a node offline (its will fired, it shut down, or it went silent).
    pub fn offline(&self, id: &str, reason: &str, now_ms: u64) -> store::Result<bool> {
        let record = {
            let mut nodes = self.write();
            let Some(e) = nodes.get_mut(id) else {
                return Ok(false);
            };
            if e.record.liveness == Liveness::Offline {
                return Ok(false);
            }
            let n = e.change();
            n.liveness = Liveness::Offline;
            n.reason = Some(reason.to_string());
            n.since_ms = now_ms;
            n.clone()
        };
        self.record(
            id,
            now_ms,
            FleetEvent::Offline {
                reason: reason.to_string(),
            },
        );
        self.store.put_node(&record)?;
        tracing::info!(node = id, reason, "node offline");
        Ok(true)
    }

    /// Marks offline every online node whose last heartbeat is older than `timeout_ms`;
    /// returns their ids.
    pub fn sweep(&self, now_ms: u64, timeout_ms: u64) -> store::Result<Vec<String>> {
        let overdue: Vec<String> = self
            .read()
            .values()
            .map(|e| &e.record)
            .filter(|n| {
                n.liveness == Liveness::Online && now_ms.saturating_sub(n.last_seen_ms) > timeout_ms
            })
            .map(|n| n.id.clone())
            .collect();
        let mut marked = Vec::new();
        for id in overdue {
            if self.offline(&id, "heartbeat overdue", now_ms)? {
                marked.push(id);
            }
        }
        Ok(marked)
    }

    pub fn get(&self, id: &str) -> Option<NodeRecord> {
        self.read().get(id).map(|e| e.record.clone())
    }

    /// Whether node `id` is online; `None` for an unknown node. Cheaper than [`Fleet::get`]
    /// when that is all a caller needs (a rollout view asks it of every node).
    pub fn liveness(&self, id: &str) -> Option<Liveness> {
        self.read().get(id).map(|e| e.record.liveness)
    }

    /// `f` of every node, in id order, without copying the records first (the list of
    /// 10,000 nodes is read often and heartbeats wait while it is).
    pub fn map<T>(&self, f: impl FnMut(&NodeRecord) -> T) -> Vec<T> {
        self.read().values().map(|e| &e.record).map(f).collect()
    }

    /// Runs `f` over every node without copying the registry (a rollout step reads
    /// thousands of records several times a second). `f` must not call back into the fleet.
    pub fn for_each(&self, f: impl FnMut(&NodeRecord)) {
        self.read().values().map(|e| &e.record).for_each(f);
    }

    /// Every node rendered by `render`, in id order; a node's rendering is reused until it
    /// changes. `render` must be pure.
    pub fn rendered(&self, render: impl Fn(&NodeRecord) -> Vec<u8>) -> Vec<Arc<[u8]>> {
        self.read()
            .values()
            .map(|e| e.rendered.get_or_init(|| render(&e.record).into()).clone())
            .collect()
    }
}

/// A node seen for the first time, before any live heartbeat.
fn unheard(id: &str, now_ms: u64) -> NodeRecord {
    NodeRecord {
        id: id.to_string(),
        liveness: Liveness::Offline,
        reason: Some("never heard from live".into()),
        since_ms: now_ms,
        first_seen_ms: now_ms,
        last_seen_ms: 0,
        labels: BTreeMap::new(),
        arch: String::new(),
        version: String::new(),
        desired_generation: 0,
        applied_generation: 0,
        modules: Vec::new(),
        buffer: Default::default(),
        resources: Default::default(),
        problems: Vec::new(),
        problems_since_ms: now_ms,
        clear_since_ms: None,
    }
}

/// A degraded node recovers only after its heartbeats have shown no problem for this long.
/// A module in restart back-off passes through `running` between failures; each pass is
/// not a recovery, and without the hold the fleet's events flapped degraded/recovered on
/// every retry.
pub const RECOVERY_HOLD_MS: u64 = 30_000;

/// What a heartbeat changed in a node's record.
#[derive(Debug, Default)]
struct Change {
    came_online: bool,
    /// Degraded or recovered (live heartbeats only).
    health: Option<FleetEvent>,
    /// The record to save, when something worth a write changed.
    persist: Option<NodeRecord>,
}

/// Applies heartbeat `hb` to `record`. A `live` one marks the node online; a retained one
/// only refreshes what it runs.
fn apply(record: &mut NodeRecord, hb: Heartbeat, live: bool, now_ms: u64) -> Change {
    let now_problems = held_problems(record, problems(&hb), live, now_ms);
    let mut change = Change::default();
    if live {
        if record.liveness != Liveness::Online {
            change.came_online = true;
            record.liveness = Liveness::Online;
            record.reason = None;
            record.since_ms = now_ms;
        }
        record.last_seen_ms = now_ms;
    }
    // Only `last_seen` moving is not worth a write: an idle fleet's heartbeats stay in
    // memory (after a restart, nodes are heard again within an interval).
    let persist = change.came_online
        || record.labels != hb.labels
        || record.arch != hb.arch
        || record.version != hb.version
        || record.desired_generation != hb.desired_generation
        || record.applied_generation != hb.applied_generation
        || record.modules != hb.modules
        || record.buffer != hb.buffer
        || record.problems != now_problems;
    if live && now_problems.is_empty() != record.problems.is_empty() {
        record.problems_since_ms = now_ms;
        change.health = Some(if now_problems.is_empty() {
            FleetEvent::Recovered
        } else {
            FleetEvent::Degraded {
                problems: now_problems.clone(),
            }
        });
    }
    record.labels = hb.labels;
    record.arch = hb.arch;
    record.version = hb.version;
    record.desired_generation = hb.desired_generation;
    record.applied_generation = hb.applied_generation;
    record.problems = now_problems;
    record.modules = hb.modules;
    record.buffer = hb.buffer;
    // Not a reason to write on its own: it moves with every heartbeat.
    record.resources = hb.resources;
    change.persist = persist.then(|| record.clone());
    change
}

/// The problems to show for a node whose heartbeat shows `seen`: a degraded node keeps its
/// last problems until [`RECOVERY_HOLD_MS`] of clean live heartbeats have passed.
fn held_problems(
    record: &mut NodeRecord,
    seen: Vec<String>,
    live: bool,
    now_ms: u64,
) -> Vec<String> {
    if !seen.is_empty() || record.problems.is_empty() || !live {
        record.clear_since_ms = None;
        return seen;
    }
    let since = *record.clear_since_ms.get_or_insert(now_ms);
    if now_ms.saturating_sub(since) < RECOVERY_HOLD_MS {
        record.problems.clone()
    } else {
        record.clear_since_ms = None;
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(id: &str, site: &str) -> Heartbeat {
        Heartbeat {
            node_id: id.into(),
            sent_at_ms: 0,
            arch: "x86_64".into(),
            version: "0.1.0".into(),
            labels: BTreeMap::from([("site".to_string(), site.to_string())]),
            desired_generation: 0,
            applied_generation: 0,
            modules: vec![],
            buffer: Default::default(),
            resources: Default::default(),
            precompile_key: None,
        }
    }

    #[test]
    fn heartbeat_sweep_and_will() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = Fleet::load(Store::open(dir.path()).unwrap()).unwrap();
        let seen = fleet.heartbeat(hb("n1", "a"), true, 1_000).unwrap();
        assert!(seen.new && seen.labels_changed);
        assert_eq!(fleet.get("n1").unwrap().liveness, Liveness::Online);

        let seen = fleet.heartbeat(hb("n1", "a"), true, 2_000).unwrap();
        assert_eq!(
            seen,
            Seen {
                new: false,
                labels_changed: false
            }
        );
        assert!(
            fleet
                .heartbeat(hb("n1", "b"), true, 3_000)
                .unwrap()
                .labels_changed
        );

        assert!(fleet.sweep(10_000, 15_000).unwrap().is_empty());
        assert_eq!(fleet.sweep(20_000, 15_000).unwrap(), ["n1"]);
        let n = fleet.get("n1").unwrap();
        assert_eq!(n.liveness, Liveness::Offline);
        assert_eq!(n.since_ms, 20_000);

        fleet.heartbeat(hb("n1", "b"), true, 21_000).unwrap();
        assert!(fleet.offline("n1", "last will", 22_000).unwrap());
        assert!(!fleet.offline("n1", "last will", 23_000).unwrap());
        assert!(!fleet.offline("unknown", "last will", 23_000).unwrap());

        let kinds: Vec<FleetEvent> = fleet
            .events("n1")
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect();
        assert_eq!(
            kinds,
            vec![
                FleetEvent::Online,
                FleetEvent::Offline {
                    reason: "heartbeat overdue".into()
                },
                FleetEvent::Online,
                FleetEvent::Offline {
                    reason: "last will".into()
                },
            ]
        );
        assert!(fleet.events("unknown").is_none());
    }

    #[test]
    fn node_events_are_kept_per_node_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = Fleet::load(Store::open(dir.path()).unwrap()).unwrap();
        let ev = |i: u64| NodeEvent {
            ts_ms: i,
            module: Some("m".into()),
            kind: EventKind::ModuleStarted,
        };
        assert!(
            !fleet.node_event("ghost", ev(0), 0),
            "unknown nodes are ignored"
        );
        fleet.heartbeat(hb("n1", "a"), true, 0).unwrap();
        for i in 0..(EVENTS_PER_NODE as u64 + 10) {
            assert!(fleet.node_event("n1", ev(i), i));
        }
        let events = fleet.events("n1").unwrap();
        assert_eq!(events.len(), EVENTS_PER_NODE);
        assert_eq!(
            events.last().unwrap().received_ms,
            EVENTS_PER_NODE as u64 + 9
        );
    }

    #[test]
    fn failing_modules_and_a_full_buffer_degrade_a_node() {
        use wedge_proto::messages::{BufferStatus, ModuleState, ModuleStatus};
        let dir = tempfile::tempdir().unwrap();
        let fleet = Fleet::load(Store::open(dir.path()).unwrap()).unwrap();
        fleet.heartbeat(hb("n1", "a"), true, 1_000).unwrap();
        assert!(fleet.get("n1").unwrap().problems.is_empty());

        let mut sick = hb("n1", "a");
        sick.modules.push(ModuleStatus {
            name: "m".into(),
            digest: wedge_proto::Digest::of(b"m"),
            state: ModuleState::Failed,
            last_error: Some("trapped".into()),
            restarts: 3,
            stats: Default::default(),
        });
        sick.resources = wedge_proto::messages::Resources {
            disk_free_bytes: 1 << 20,
            disk_total_bytes: 100 << 20,
            memory_available_bytes: 50,
            memory_total_bytes: 100,
        };
        sick.buffer = BufferStatus {
            pending: 10,
            bytes: 90,
            oldest_age_ms: 0,
            dropped: 0,
            quota_bytes: 100,
        };
        fleet.heartbeat(sick, true, 2_000).unwrap();
        let n = fleet.get("n1").unwrap();
        assert_eq!(
            n.problems,
            [
                "module m failing: trapped",
                "disk 99% full (1 MiB free)",
                "telemetry buffer 90% full (10 records waiting)"
            ]
        );
        assert_eq!(n.problems_since_ms, 2_000);

        // 4 % of a big disk is still gigabytes: not pressure.
        let mut big = hb("n1", "a");
        big.resources.disk_total_bytes = 250 << 30;
        big.resources.disk_free_bytes = 10 << 30;
        assert!(problems(&big).is_empty());
        big.resources.disk_free_bytes = 512 << 20;
        assert_eq!(problems(&big), ["disk 100% full (512 MiB free)"]);

        // Clean heartbeats: still degraded until they have lasted RECOVERY_HOLD_MS.
        fleet.heartbeat(hb("n1", "a"), true, 3_000).unwrap();
        assert_eq!(fleet.get("n1").unwrap().problems.len(), 3);
        fleet
            .heartbeat(hb("n1", "a"), true, 3_000 + RECOVERY_HOLD_MS)
            .unwrap();
        assert!(fleet.get("n1").unwrap().problems.is_empty());
        let kinds: Vec<FleetEvent> = fleet
            .events("n1")
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect();
        assert!(matches!(kinds[1], FleetEvent::Degraded { .. }));
        assert_eq!(kinds[2], FleetEvent::Recovered);
    }

    #[test]
    fn a_module_in_restart_backoff_is_one_problem_not_a_flap() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = Fleet::load(Store::open(dir.path()).unwrap()).unwrap();
        let with_module = |state| {
            let mut h = hb("n1", "a");
            h.modules.push(wedge_proto::messages::ModuleStatus {
                name: "m".into(),
                digest: wedge_proto::Digest::of(b"m"),
                state,
                last_error: Some("trapped".into()),
                restarts: 1,
                stats: Default::default(),
            });
            h
        };
        use wedge_proto::messages::ModuleState::{Failed, Running};
        // Three minutes of a module that fails, restarts, runs a moment and fails again,
        // with a heartbeat every 5 s.
        let mut now = 1_000;
        for i in 0..36 {
            let state = if i % 2 == 0 { Failed } else { Running };
            fleet.heartbeat(with_module(state), true, now).unwrap();
            now += 5_000;
        }
        let health: Vec<FleetEvent> = fleet
            .events("n1")
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .filter(|e| matches!(e, FleetEvent::Degraded { .. } | FleetEvent::Recovered))
            .collect();
        assert_eq!(health.len(), 1, "{health:?}");
        // Fixed: it recovers once, after the hold.
        while now < 1_000 + 36 * 5_000 + RECOVERY_HOLD_MS + 5_000 {
            fleet.heartbeat(with_module(Running), true, now).unwrap();
            now += 5_000;
        }
        let events = fleet.events("n1").unwrap();
        assert_eq!(
            events.last().map(|e| &e.event),
            Some(&FleetEvent::Recovered)
        );
    }

    #[test]
    fn renderings_are_reused_until_the_node_changes() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = Fleet::load(Store::open(dir.path()).unwrap()).unwrap();
        fleet.heartbeat(hb("n1", "a"), true, 1_000).unwrap();
        fleet.heartbeat(hb("n2", "a"), true, 1_000).unwrap();
        let calls = std::sync::atomic::AtomicU32::new(0);
        let render = |n: &NodeRecord| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("{}@{}", n.id, n.last_seen_ms).into_bytes()
        };
        let first = fleet.rendered(render);
        assert_eq!(&*first[0], b"n1@1000");
        assert_eq!(fleet.rendered(render), first);
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 2);
        fleet.heartbeat(hb("n2", "a"), true, 2_000).unwrap();
        let again = fleet.rendered(render);
        assert_eq!(&*again[1], b"n2@2000");
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 3);
    }

    #[test]
    fn retained_heartbeat_does_not_mark_online() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = Fleet::load(Store::open(dir.path()).unwrap()).unwrap();
        fleet.heartbeat(hb("n1", "a"), false, 1_000).unwrap();
        assert_eq!(fleet.get("n1").unwrap().liveness, Liveness::Offline);
    }

    #[test]
    fn registry_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let fleet = Fleet::load(Store::open(dir.path()).unwrap()).unwrap();
            fleet.heartbeat(hb("n1", "a"), true, 1_000).unwrap();
        }
        // sled releases its lock asynchronously after the drop: reopen waits for it.
        let fleet = Fleet::load(crate::store::tests::reopen(dir.path())).unwrap();
        assert_eq!(fleet.map(|n| n.id.clone()), ["n1"]);
    }
}
