//! The admin protocol's state enums, and their words for people: the
//! cluster's own states travel as proto enums, never as strings a client
//! would have to recognise.

use crate::cluster::{Liveness, Phase, Problem};
use crate::proto::cluster as pb;

impl From<Phase> for pb::ChangePhase {
    fn from(p: Phase) -> Self {
        match p {
            Phase::Idle => pb::ChangePhase::Idle,
            Phase::Planning => pb::ChangePhase::Planning,
            Phase::Copying => pb::ChangePhase::Copying,
            Phase::Committing => pb::ChangePhase::Committing,
            Phase::Cleaning => pb::ChangePhase::Cleaning,
            Phase::OrphanGrace => pb::ChangePhase::Grace,
            Phase::RemovingOrphans => pb::ChangePhase::Orphans,
            Phase::Done => pb::ChangePhase::Done,
        }
    }
}

impl pb::ChangePhase {
    /// The phase in a word (`"copying"`), as progress lines and JSON
    /// output show it.
    pub fn label(self) -> &'static str {
        match self {
            pb::ChangePhase::Unspecified => "unknown",
            pb::ChangePhase::Idle => "idle",
            pb::ChangePhase::Planning => "planning",
            pb::ChangePhase::Copying => "copying",
            pb::ChangePhase::Committing => "committing",
            pb::ChangePhase::Cleaning => "cleaning",
            pb::ChangePhase::Grace => "grace",
            pb::ChangePhase::Orphans => "orphans",
            pb::ChangePhase::Done => "done",
        }
    }
}

impl From<Liveness> for pb::NodeLiveness {
    fn from(l: Liveness) -> Self {
        match l {
            Liveness::Up => pb::NodeLiveness::Up,
            Liveness::Suspect => pb::NodeLiveness::Suspect,
            Liveness::Down => pb::NodeLiveness::Down,
        }
    }
}

impl pb::NodeLiveness {
    /// `"up"`, `"suspect"` or `"down"`.
    pub fn label(self) -> &'static str {
        match self {
            pb::NodeLiveness::Unspecified => "unknown",
            pb::NodeLiveness::Up => "up",
            pb::NodeLiveness::Suspect => "suspect",
            pb::NodeLiveness::Down => "down",
        }
    }
}

impl From<&Problem> for pb::ProblemKind {
    fn from(p: &Problem) -> Self {
        match p {
            Problem::Missing { .. } => pb::ProblemKind::Missing,
            Problem::Surplus { .. } => pb::ProblemKind::Surplus,
            Problem::Corrupt { .. } => pb::ProblemKind::Corrupt,
            Problem::Lost { .. } => pb::ProblemKind::Lost,
            Problem::Conflict { .. } => pb::ProblemKind::Conflict,
            Problem::Orphan { .. } => pb::ProblemKind::Orphan,
            Problem::Unchecked { .. } => pb::ProblemKind::Unchecked,
        }
    }
}

impl pb::ProblemKind {
    /// The kind in a word (`"missing"`), as [`Problem::kind`] names it.
    pub fn label(self) -> &'static str {
        match self {
            pb::ProblemKind::Unspecified => "unknown",
            pb::ProblemKind::Missing => "missing",
            pb::ProblemKind::Surplus => "surplus",
            pb::ProblemKind::Corrupt => "corrupt",
            pb::ProblemKind::Lost => "lost",
            pb::ProblemKind::Conflict => "conflict",
            pb::ProblemKind::Orphan => "orphan",
            pb::ProblemKind::Unchecked => "unchecked",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_keeps_its_word() {
        let phases = [
            Phase::Idle,
            Phase::Planning,
            Phase::Copying,
            Phase::Committing,
            Phase::Cleaning,
            Phase::OrphanGrace,
            Phase::RemovingOrphans,
            Phase::Done,
        ];
        for p in phases {
            assert_eq!(pb::ChangePhase::from(p).label(), p.name());
        }
        for l in [Liveness::Up, Liveness::Suspect, Liveness::Down] {
            assert_eq!(pb::NodeLiveness::from(l).label(), l.name());
        }
    }
}
