//! Telemetry delivery, node side: the buffer's records go up in batches, several in
//! flight, and are deleted only when the control plane acknowledges that it stored them.
//!
//! Go-back-N over the buffer's positions: the control plane stores a record only when it
//! is the next one of its (node, epoch) and acknowledges `(epoch, highest stored)`. After a
//! reconnect, or when an acknowledgement is overdue, the node sends again from the last
//! acknowledged record; the control plane drops what it already has. So a record can
//! travel twice but is stored once, and nothing is deleted before it is stored. Only
//! records on disk are sent ([`Buffer::sync`] runs first when some are not): a record the
//! control plane holds can never be lost by the node and replaced by another.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::buffer::Buffer;
use crate::uplink::UplinkClient;

/// Batches sent and not yet acknowledged, at most.
pub const MAX_IN_FLIGHT: usize = 4;
/// Records in one batch, at most.
pub const BATCH_RECORDS: usize = 5000;
/// Encoded bytes in one batch, about (well below the uplink's packet limit).
pub const BATCH_BYTES: usize = 512 * 1024;
/// An acknowledgement later than this makes the node send again from the last one.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// What the session tells the uploader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadEvent {
    Connected,
    Disconnected,
    Ack { epoch: u64, upto: u64 },
}

/// The delivery state machine. Pure: the caller reads the buffer and sends.
#[derive(Debug)]
pub struct Uploader {
    acked: u64,
    sent_upto: u64,
    in_flight: VecDeque<(u64, Instant)>,
}

impl Uploader {
    /// `acked`: everything up to here is delivered (the buffer holds only what follows).
    pub fn new(acked: u64) -> Self {
        Self {
            acked,
            sent_upto: acked,
            in_flight: VecDeque::new(),
        }
    }

    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Records an acknowledgement; returns the new delivered mark when it moved.
    pub fn on_ack(&mut self, upto: u64) -> Option<u64> {
        while self
            .in_flight
            .front()
            .is_some_and(|(last, _)| *last <= upto)
        {
            self.in_flight.pop_front();
        }
        if upto <= self.acked {
            return None;
        }
        self.acked = upto;
        self.sent_upto = self.sent_upto.max(upto);
        Some(upto)
    }

    /// Forget what is in flight and send again from the last acknowledgement.
    pub fn rewind(&mut self) {
        self.sent_upto = self.acked;
        self.in_flight.clear();
    }

    /// Whether another batch may go out.
    pub fn can_send(&self) -> bool {
        self.in_flight.len() < MAX_IN_FLIGHT
    }

    /// The next batch starts after this sequence number.
    pub fn next_after(&self) -> u64 {
        self.sent_upto
    }

    pub fn sent(&mut self, last_seq: u64, now: Instant) {
        self.sent_upto = last_seq;
        self.in_flight.push_back((last_seq, now));
    }

    /// Whether the oldest batch in flight waited too long for its acknowledgement.
    pub fn overdue(&self, now: Instant) -> bool {
        self.in_flight
            .front()
            .is_some_and(|(_, at)| now.duration_since(*at) > ACK_TIMEOUT)
    }
}

/// Delivers the buffer until `shutdown`.
pub async fn run(
    buffer: Buffer,
    client: UplinkClient,
    mut events: mpsc::Receiver<UploadEvent>,
    ttl: Option<Duration>,
    shutdown: CancellationToken,
) {
    let start = buffer.first_available().unwrap_or(1).saturating_sub(1);
    let mut up = Uploader::new(start);
    let mut connected = false;
    let mut check = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.recv() => match event {
                None => return,
                Some(UploadEvent::Connected) => {
                    connected = true;
                    up.rewind();
                }
                Some(UploadEvent::Disconnected) => connected = false,
                Some(UploadEvent::Ack { epoch, upto }) => match buffer.acknowledge(epoch, upto) {
                    Ok(Some(upto)) => {
                        up.on_ack(upto);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "cannot delete delivered telemetry"),
                },
            },
            _ = buffer.appended() => {}
            _ = check.tick() => {
                if let Some(ttl) = ttl {
                    let now_ms = wedge_proto::now_ms();
                    match buffer.expire(now_ms.saturating_sub(ttl.as_millis() as u64)) {
                        Ok(0) => {}
                        Ok(n) => tracing::warn!(expired = n, "undelivered telemetry expired"),
                        Err(e) => tracing::error!(error = %e, "cannot expire telemetry"),
                    }
                }
                if up.overdue(Instant::now()) {
                    tracing::warn!(acked = up.acked(), "telemetry acknowledgement overdue; sending again");
                    up.rewind();
                }
            }
        }
        // Group commit: one flush covers everything appended since the last one. It runs
        // while the link is down too, so the durable mark (a metric) says what survives a
        // crash at any time.
        if buffer.durable() < buffer.last_issued()
            && let Err(e) = buffer.sync().await
        {
            tracing::error!(error = %e, "cannot flush the telemetry buffer");
            continue;
        }
        if connected {
            send_more(&buffer, &client, &mut up);
        }
    }
}

fn send_more(buffer: &Buffer, client: &UplinkClient, up: &mut Uploader) {
    while up.can_send() {
        let batch = match buffer.batch(up.next_after(), BATCH_RECORDS, BATCH_BYTES) {
            Ok(Some(batch)) => batch,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the telemetry buffer");
                return;
            }
        };
        let Some(last) = batch.records.last().map(|r| r.seq) else {
            return;
        };
        if !client.telemetry(&batch) {
            // The client's queue is full (link down or slow): try again on the next event.
            return;
        }
        up.sent(last, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_move_the_mark_and_free_the_window() {
        let t0 = Instant::now();
        let mut up = Uploader::new(0);
        for last in [10, 20, 30, 40] {
            assert!(up.can_send());
            up.sent(last, t0);
        }
        assert!(!up.can_send());
        assert_eq!(up.on_ack(20), Some(20));
        assert!(up.can_send());
        assert_eq!(up.next_after(), 40);
        assert_eq!(up.on_ack(15), None, "an old ack changes nothing");
        assert_eq!(up.acked(), 20);
    }

    #[test]
    fn rewind_and_overdue_send_again_from_the_last_ack() {
        let t0 = Instant::now();
        let mut up = Uploader::new(5);
        up.sent(10, t0);
        up.sent(20, t0);
        assert!(!up.overdue(t0 + Duration::from_secs(1)));
        assert!(up.overdue(t0 + ACK_TIMEOUT + Duration::from_secs(1)));
        up.on_ack(10);
        up.rewind();
        assert_eq!(up.next_after(), 10);
        assert!(!up.overdue(t0 + ACK_TIMEOUT * 2));
    }
}
