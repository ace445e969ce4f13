//! How fast a new revision spreads: `{"canary": N | "P%", "batch": N | "P%",
//! "bake_seconds": S, "max_failure_ratio": R}`.
//!
//! The default is "every node at once, no automatic rollback": a deployment without a
//! strategy behaves as it did before rollouts existed. Gating is opt-in per deployment.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number of nodes, absolute or as a share of the nodes the revision targets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Nodes(u64),
    /// Percent, 0 to 100.
    Percent(f64),
}

impl Amount {
    /// The number of nodes out of `total`; a non-zero percentage is at least one node.
    pub fn of(self, total: usize) -> usize {
        match self {
            Self::Nodes(n) => usize::try_from(n).unwrap_or(usize::MAX),
            Self::Percent(p) if p <= 0.0 => 0,
            Self::Percent(p) => ((total as f64 * p / 100.0).ceil() as usize).max(1),
        }
    }

    fn is_zero(self) -> bool {
        matches!(self, Self::Nodes(0)) || matches!(self, Self::Percent(p) if p <= 0.0)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Nodes(n) => write!(f, "{n}"),
            Self::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl FromStr for Amount {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} is not a percentage"))?;
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("{s:?} is not between 0% and 100%"));
            }
            Ok(Self::Percent(p))
        } else {
            s.parse()
                .map(Self::Nodes)
                .map_err(|_| format!("{s:?} is neither a node count nor a percentage like \"10%\""))
        }
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Nodes(n) => s.serialize_u64(*n),
            Self::Percent(_) => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a node count or a percentage like \"10%\"")
        })? {
            Raw::Count(n) => Ok(Self::Nodes(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl utoipa::PartialSchema for Amount {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^[0-9]+(\.[0-9]+)?%$")),
            )
            .description(Some(
                "a number of nodes, or a share of the targeted nodes like \"10%\"",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Amount {}

/// The rollout strategy of a deployment revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Strategy {
    /// Nodes updated first, alone; 0 skips the canary phase.
    pub canary: Amount,
    /// Nodes updated together after the canary, batch by batch.
    pub batch: Amount,
    /// How long a node's module must run without a crash to count as healthy.
    pub bake_seconds: u64,
    /// Failed / updated nodes above this stops the rollout and rolls back; 1 never does.
    pub max_failure_ratio: f64,
}

impl Default for Strategy {
    fn default() -> Self {
        Self {
            canary: Amount::Nodes(0),
            batch: Amount::Percent(100.0),
            bake_seconds: 0,
            max_failure_ratio: 1.0,
        }
    }
}

/// Longest bake allowed (a day): longer is almost certainly a unit mistake.
pub const MAX_BAKE_SECONDS: u64 = 86_400;

impl Strategy {
    /// Checks the values a request may carry.
    pub fn validate(&self) -> Result<(), String> {
        if self.batch.is_zero() {
            return Err("strategy.batch must be at least 1 node or above 0%".into());
        }
        if !(0.0..=1.0).contains(&self.max_failure_ratio) {
            return Err("strategy.max_failure_ratio must be between 0 and 1".into());
        }
        if self.bake_seconds > MAX_BAKE_SECONDS {
            return Err(format!(
                "strategy.bake_seconds must be at most {MAX_BAKE_SECONDS}"
            ));
        }
        Ok(())
    }

    pub fn has_canary(&self) -> bool {
        !self.canary.is_zero()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_and_scale() {
        let s: Strategy = serde_json::from_str(
            r#"{"canary": 1, "batch": "25%", "bake_seconds": 30, "max_failure_ratio": 0.1}"#,
        )
        .unwrap();
        assert_eq!(s.canary, Amount::Nodes(1));
        assert_eq!(s.batch, Amount::Percent(25.0));
        assert_eq!(s.batch.of(10), 3);
        assert_eq!(
            Amount::Percent(1.0).of(10),
            1,
            "a share is at least one node"
        );
        assert_eq!(Amount::Percent(0.0).of(10), 0);
        assert!(s.validate().is_ok());
        assert_eq!(
            serde_json::to_value(&s).unwrap()["batch"],
            serde_json::json!("25%")
        );

        let d: Strategy = serde_json::from_str("{}").unwrap();
        assert_eq!(d, Strategy::default());
        assert!(!d.has_canary());
    }

    #[test]
    fn bad_strategies_are_refused() {
        for bad in [
            r#"{"batch": "150%"}"#,
            r#"{"canary": "many"}"#,
            r#"{"canary": -1}"#,
            r#"{"surge": 1}"#,
        ] {
            assert!(serde_json::from_str::<Strategy>(bad).is_err(), "{bad}");
        }
        for bad in [
            r#"{"batch": 0}"#,
            r#"{"max_failure_ratio": 1.5}"#,
            r#"{"bake_seconds": 100000000}"#,
        ] {
            let s: Strategy = serde_json::from_str(bad).unwrap();
            assert!(s.validate().is_err(), "{bad}");
        }
    }
}
