//! Open risks: what a `lanyard risk report` leaves behind until it is cleared.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::RiskLevelError;

/// Max open risk level per subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RiskLevel {
    /// Worth watching.
    Low,
    /// Likely abuse.
    Medium,
    /// Compromise suspected.
    High,
}

impl RiskLevel {
    /// Every level, lowest first.
    pub const ALL: [Self; 3] = [Self::Low, Self::Medium, Self::High];

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }

    /// 1 for low up to 3 for high; Cedar sees 0 when no risk is open.
    pub fn level(self) -> i64 {
        match self {
            Self::Low => 1,
            Self::Medium => 2,
            Self::High => 3,
        }
    }
}

impl FromStr for RiskLevel {
    type Err = RiskLevelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|l| l.as_str() == s).ok_or_else(|| RiskLevelError(s.to_owned()))
    }
}

impl fmt::Display for RiskLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a risk report is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RiskSubjectKind {
    /// The end user.
    User,
    /// The connector workload.
    Connector,
    /// The node agent that attested the connector.
    Agent,
    /// The user's session.
    Session,
}

impl RiskSubjectKind {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Connector => "connector",
            Self::Agent => "agent",
            Self::Session => "session",
        }
    }
}

impl fmt::Display for RiskSubjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Open risks relevant to a request (the highest open level for each subject, None = none open).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenRisks {
    /// On the end user.
    pub user: Option<RiskLevel>,
    /// On the connector.
    pub connector: Option<RiskLevel>,
    /// On the node agent.
    pub agent: Option<RiskLevel>,
    /// On the session.
    pub session: Option<RiskLevel>,
}

impl OpenRisks {
    /// No open risk at all.
    pub const NONE: Self = Self { user: None, connector: None, agent: None, session: None };

    /// The highest level open on any subject.
    pub fn highest(&self) -> Option<RiskLevel> {
        self.by_subject().into_iter().filter_map(|(_, level)| level).max()
    }

    /// Each subject with its level, in the order the ceilings check them.
    pub fn by_subject(&self) -> [(RiskSubjectKind, Option<RiskLevel>); 4] {
        [
            (RiskSubjectKind::User, self.user),
            (RiskSubjectKind::Connector, self.connector),
            (RiskSubjectKind::Agent, self.agent),
            (RiskSubjectKind::Session, self.session),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_print_and_order() {
        for l in RiskLevel::ALL {
            assert_eq!(l.to_string().parse::<RiskLevel>(), Ok(l));
            assert_eq!(serde_json::to_string(&l).unwrap(), format!("\"{l}\""));
        }
        assert!(RiskLevel::Low < RiskLevel::Medium && RiskLevel::Medium < RiskLevel::High);
        assert_eq!("High".parse::<RiskLevel>(), Err(RiskLevelError("High".into())));
        assert_eq!(RiskSubjectKind::Session.to_string(), "session");
    }

    #[test]
    fn highest_of_all_subjects() {
        assert_eq!(OpenRisks::default().highest(), None);
        let r = OpenRisks { user: Some(RiskLevel::Low), agent: Some(RiskLevel::High), ..OpenRisks::NONE };
        assert_eq!(r.highest(), Some(RiskLevel::High));
    }
}
