//! Majority computations over a configuration's voters, in one place: the
//! commit index (section 5.3), the election tally (section 5.2), and "is a
//! majority of voters in this set" (check-quorum, ReadIndex confirmation).
//! Learners never count. Pure functions, no state.

use super::message::{Configuration, NodeId};

/// The outcome of counting votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteResult {
    /// A majority granted.
    Won,
    /// A majority refused (or can no longer grant).
    Lost,
    /// Neither yet.
    Pending,
}

/// The number of voters that make a majority.
pub fn majority(config: &Configuration) -> usize {
    config.voters.len() / 2 + 1
}

/// The highest index stored on a majority of voters, given each voter's match
/// index (`match_of`). Returns `u64::MAX` for an empty voter set, so callers
/// clamp it with their own bounds.
pub fn committed_index(config: &Configuration, match_of: impl Fn(NodeId) -> u64) -> u64 {
    if config.voters.is_empty() {
        return u64::MAX;
    }
    let mut matches: Vec<u64> = config.voters.iter().map(|&id| match_of(id)).collect();
    matches.sort_unstable_by(|a, b| b.cmp(a));
    matches[majority(config) - 1]
}

/// Counts votes: `vote_of(id)` is `Some(granted)` for voters that answered.
pub fn vote_result(config: &Configuration, vote_of: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
    let (mut granted, mut missing) = (0, 0);
    for &id in &config.voters {
        match vote_of(id) {
            Some(true) => granted += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    let need = majority(config);
    if granted >= need {
        VoteResult::Won
    } else if granted + missing >= need {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

/// Whether the voters for which `is_member` holds form a majority.
pub fn has_majority(config: &Configuration, is_member: impl Fn(NodeId) -> bool) -> bool {
    config.voters.iter().filter(|&&id| is_member(id)).count() >= majority(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the commit index is the majority-th highest match; learners are ignored.
    /// Reference: section 5.3 and 5.4.2 (the caller checks the term).
    #[test]
    fn committed_index_table() {
        let cases: [(&[u64], &[u64], u64); 5] = [
            (&[1], &[5], 5),
            (&[1, 2, 3], &[5, 3, 1], 3),
            (&[1, 2, 3], &[5, 0, 0], 0),
            (&[1, 2, 3, 4], &[4, 4, 2, 1], 2),
            (&[1, 2, 3, 4, 5], &[9, 8, 7, 1, 1], 7),
        ];
        for (i, (voters, matches, want)) in cases.iter().enumerate() {
            let config = Configuration::new(voters.iter().copied(), [100]);
            let got = committed_index(&config, |id| {
                if id == 100 {
                    1000
                } else {
                    matches[(id - 1) as usize]
                }
            });
            assert_eq!(got, *want, "#{i}");
        }
        assert_eq!(committed_index(&Configuration::default(), |_| 0), u64::MAX);
    }

    /// Goal: the tally says Won/Lost as soon as it is decided. Reference: section 5.2.
    #[test]
    fn vote_result_table() {
        let config = Configuration::new([1, 2, 3, 4, 5], [6]);
        let cases: [(&[Option<bool>], VoteResult); 4] = [
            (&[Some(true), None, None, None, None], VoteResult::Pending),
            (
                &[Some(true), Some(true), Some(true), None, None],
                VoteResult::Won,
            ),
            (
                &[Some(true), Some(false), Some(false), Some(false), None],
                VoteResult::Lost,
            ),
            (
                &[Some(true), Some(true), Some(false), Some(false), None],
                VoteResult::Pending,
            ),
        ];
        for (i, (votes, want)) in cases.iter().enumerate() {
            let got = vote_result(&config, |id| {
                votes.get((id - 1) as usize).copied().flatten()
            });
            assert_eq!(got, *want, "#{i}");
        }
        assert!(has_majority(&config, |id| id <= 3));
        assert!(
            !has_majority(&config, |id| id <= 2 || id == 6),
            "learner does not count"
        );
    }
}
