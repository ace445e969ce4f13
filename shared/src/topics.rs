//! Topic names of the uplink, validation of ids, and MQTT topic-filter matching.
//!
//! Every uplink topic lives under `wedge/v1/nodes/{node}/`; a node only ever uses its own
//! prefix. Node ids and instance names are restricted to `[A-Za-z0-9._-]{1,128}` so they are
//! always a single, wildcard-free topic level and a safe storage key.

/// Root of every uplink topic.
pub const PREFIX: &str = "wedge/v1/nodes";

/// Which uplink topic of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeTopic {
    Status,
    Desired,
    BlobRequest,
    BlobData,
    Events,
    Telemetry,
    TelemetryAck,
    /// A node asks for a renewed certificate.
    CertRequest,
    /// The control plane's answer.
    CertReply,
}

impl NodeTopic {
    /// Every kind.
    pub const ALL: [NodeTopic; 9] = [
        NodeTopic::Status,
        NodeTopic::Desired,
        NodeTopic::BlobRequest,
        NodeTopic::BlobData,
        NodeTopic::Events,
        NodeTopic::Telemetry,
        NodeTopic::TelemetryAck,
        NodeTopic::CertRequest,
        NodeTopic::CertReply,
    ];

    /// Whether a node publishes this kind (the others only the control plane publishes).
    pub fn from_node(self) -> bool {
        matches!(
            self,
            Self::Status | Self::BlobRequest | Self::Events | Self::Telemetry | Self::CertRequest
        )
    }

    fn suffix(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Desired => "desired",
            Self::BlobRequest => "blob/req",
            Self::BlobData => "blob/data",
            Self::Events => "events",
            Self::Telemetry => "telemetry",
            Self::TelemetryAck => "telemetry/ack",
            Self::CertRequest => "cert/req",
            Self::CertReply => "cert/reply",
        }
    }

    /// The topic of this kind for `node`.
    pub fn for_node(self, node: &str) -> String {
        format!("{PREFIX}/{node}/{}", self.suffix())
    }

    /// The filter that matches this kind of topic for every node.
    pub fn all_nodes(self) -> String {
        format!("{PREFIX}/+/{}", self.suffix())
    }
}

/// Splits an uplink topic into its node id and kind; `None` for any other topic.
pub fn parse(topic: &str) -> Option<(&str, NodeTopic)> {
    let rest = topic.strip_prefix(PREFIX)?.strip_prefix('/')?;
    let (node, suffix) = rest.split_once('/')?;
    if validate_id(node).is_err() {
        return None;
    }
    let kind = NodeTopic::ALL.into_iter().find(|k| k.suffix() == suffix)?;
    Some((node, kind))
}

/// Root of the enrollment topics: a node that has no certificate yet asks for one on
/// `wedge/v1/enroll/{node}/req` and gets it on `wedge/v1/enroll/{node}/reply`.
pub const ENROLL_PREFIX: &str = "wedge/v1/enroll";

/// The enrollment request topic of `node`.
pub fn enroll_request(node: &str) -> String {
    format!("{ENROLL_PREFIX}/{node}/req")
}

/// The enrollment reply topic of `node`.
pub fn enroll_reply(node: &str) -> String {
    format!("{ENROLL_PREFIX}/{node}/reply")
}

/// The node of an enrollment request topic.
pub fn parse_enroll_request(topic: &str) -> Option<&str> {
    let node = topic
        .strip_prefix(ENROLL_PREFIX)?
        .strip_prefix('/')?
        .strip_suffix("/req")?;
    validate_id(node).ok().map(|()| node)
}

/// MQTT client ids of Wedge's own connections begin with this: the control plane's client on
/// its broker (`wedge:control-plane:…`) and a node's in-process link on its local broker
/// (`wedge:node:{id}`). No node id can (`:` is not allowed in one), and a node's device gate
/// refuses it, so nobody can connect with an internal id and take over its session.
pub const INTERNAL_CLIENT_PREFIX: &str = "wedge:";

/// The client id of a node's in-process link to its own local broker.
pub fn node_link_client_id(node: &str) -> String {
    format!("{INTERNAL_CLIENT_PREFIX}node:{node}")
}

/// The client id of a control-plane process on its broker; `instance` tells processes
/// (replicas, restarts) apart.
pub fn control_plane_client_id(instance: &str) -> String {
    format!("{INTERNAL_CLIENT_PREFIX}control-plane:{instance}")
}

/// Whether `client_id` is reserved for Wedge's own connections.
pub fn is_internal_client_id(client_id: &str) -> bool {
    client_id.starts_with(INTERNAL_CLIENT_PREFIX)
}

/// Why a node id or instance name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most 128 characters")]
    TooLong,
    #[error("may only contain letters, digits, '.', '_' and '-'")]
    BadCharacter,
    #[error("must not be only dots ('.' and '..' name directories)")]
    OnlyDots,
}

/// Checks a node id, deployment or module name.
pub fn validate_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > 128 {
        return Err(IdError::TooLong);
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(IdError::BadCharacter);
    }
    if id.chars().all(|c| c == '.') {
        return Err(IdError::OnlyDots);
    }
    Ok(())
}

/// Why an MQTT topic filter or topic name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most 1024 bytes")]
    TooLong,
    #[error("'#' must be the last level, alone")]
    BadMultiLevel,
    #[error("'+' must fill a whole level")]
    BadSingleLevel,
    #[error("a topic name may not contain wildcards")]
    Wildcard,
    #[error("may not contain NUL")]
    Nul,
}

fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > 1024 {
        return Err(TopicError::TooLong);
    }
    if s.contains('\0') {
        return Err(TopicError::Nul);
    }
    Ok(())
}

/// Checks an MQTT topic filter (wildcards allowed).
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i != levels.len() - 1) {
            return Err(TopicError::BadMultiLevel);
        }
        if level.contains('+') && *level != "+" {
            return Err(TopicError::BadSingleLevel);
        }
    }
    Ok(())
}

/// Checks an MQTT topic name (what a publish goes to: no wildcards).
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    check_common(topic)?;
    if topic.contains(['+', '#']) {
        return Err(TopicError::Wildcard);
    }
    Ok(())
}

/// Whether `topic` matches the MQTT topic filter `filter`.
///
/// Follows MQTT 3.1.1 §4.7: `+` matches one level, a trailing `#` matches the parent and
/// any number of levels, and filters starting with a wildcard do not match `$` topics.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_round_trip() {
        for kind in NodeTopic::ALL {
            let t = kind.for_node("node-1");
            assert_eq!(parse(&t), Some(("node-1", kind)));
            assert!(matches(&kind.all_nodes(), &t));
        }
        assert_eq!(parse("wedge/v1/nodes/a/unknown"), None);
        assert_eq!(parse("wedge/v1/nodes/a+b/status"), None);
        assert_eq!(parse("other/a/status"), None);
    }

    #[test]
    fn filter_matching() {
        assert!(matches("sensors/#", "sensors"));
        assert!(matches("sensors/#", "sensors/a/b"));
        assert!(matches("sensors/+/temp", "sensors/a/temp"));
        assert!(!matches("sensors/+/temp", "sensors/a/b/temp"));
        assert!(!matches("sensors/+", "sensors"));
        assert!(matches("#", "anything/at/all"));
        assert!(!matches("#", "$SYS/x"));
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
    }

    #[test]
    fn filter_validation() {
        assert!(validate_filter("sensors/#").is_ok());
        assert!(validate_filter("+/x/+").is_ok());
        assert_eq!(validate_filter(""), Err(TopicError::Empty));
        assert_eq!(validate_filter("a/#/b"), Err(TopicError::BadMultiLevel));
        assert_eq!(validate_filter("a/b#"), Err(TopicError::BadMultiLevel));
        assert_eq!(validate_filter("a/b+"), Err(TopicError::BadSingleLevel));
        assert_eq!(validate_topic("a/+"), Err(TopicError::Wildcard));
        assert!(validate_topic("alerts/temp").is_ok());
    }

    #[test]
    fn id_validation() {
        assert!(validate_id("node-1.a_b").is_ok());
        assert_eq!(validate_id(""), Err(IdError::Empty));
        assert_eq!(validate_id("a/b"), Err(IdError::BadCharacter));
        assert_eq!(validate_id("a+"), Err(IdError::BadCharacter));
        assert_eq!(validate_id(&"x".repeat(129)), Err(IdError::TooLong));
        // Ids name directories and files: never the current or parent directory.
        assert_eq!(validate_id("."), Err(IdError::OnlyDots));
        assert_eq!(validate_id(".."), Err(IdError::OnlyDots));
        assert_eq!(validate_id("..."), Err(IdError::OnlyDots));
        assert!(validate_id(".hidden").is_ok());
        assert!(validate_id("a..b").is_ok());
    }

    #[test]
    fn internal_client_ids_are_never_node_ids() {
        for id in [node_link_client_id("n1"), control_plane_client_id("7")] {
            assert!(is_internal_client_id(&id));
            assert!(
                validate_id(&id).is_err(),
                "{id} must not be a valid node id"
            );
        }
        assert!(!is_internal_client_id("wedge-control-1"));
    }
}
