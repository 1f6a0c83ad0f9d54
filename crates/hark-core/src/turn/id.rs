//! The identity of a reply bubble, as the store keeps it in the message's `client_id`.

use std::fmt;
use std::str::FromStr;

/// Bubble `index` of the reply of epoch `epoch`, which read every person message up to
/// `read_up_to`.
///
/// The runtime sends each bubble with this as its `client_id`, written
/// `turn-{epoch}-{index}-r{read_up_to}`, committed with the message. After a crash the log itself
/// therefore says which bursts were answered (the highest `read_up_to` of the agent's bubbles)
/// and which epoch was last used, and a bubble resent after a restart is a duplicate of the same
/// `client_id`, not a second answer. This type is the one place that writes and reads that form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TurnId {
    /// The generation's epoch.
    pub epoch: u64,
    /// The bubble's position in its reply, from 0.
    pub index: u32,
    /// The highest person message the reply had read.
    pub read_up_to: u64,
}

/// Why a string is not a [`TurnId`]: it is some other client's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotATurnId;

impl fmt::Display for NotATurnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a turn id of the form turn-{epoch}-{index}-r{read_up_to}")
    }
}

impl std::error::Error for NotATurnId {}

impl fmt::Display for TurnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "turn-{}-{}-r{}", self.epoch, self.index, self.read_up_to)
    }
}

impl FromStr for TurnId {
    type Err = NotATurnId;

    /// Parses exactly the form [`TurnId`]'s `Display` writes: decimal numbers without signs or
    /// leading `+`, nothing before or after.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix("turn-").ok_or(NotATurnId)?;
        let mut parts = rest.split('-');
        let (Some(epoch), Some(index), Some(read), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(NotATurnId);
        };
        let read = read.strip_prefix('r').ok_or(NotATurnId)?;
        Ok(TurnId {
            epoch: decimal(epoch)?,
            index: u32::try_from(decimal(index)?).map_err(|_| NotATurnId)?,
            read_up_to: decimal(read)?,
        })
    }
}

/// A plain decimal number: `u64::from_str` would also take a leading `+`.
fn decimal(s: &str) -> Result<u64, NotATurnId> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NotATurnId);
    }
    s.parse().map_err(|_| NotATurnId)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let id = TurnId {
            epoch: 12,
            index: 3,
            read_up_to: 40,
        };
        assert_eq!(id.to_string(), "turn-12-3-r40");
        assert_eq!("turn-12-3-r40".parse(), Ok(id));
        let max = TurnId {
            epoch: u64::MAX,
            index: u32::MAX,
            read_up_to: u64::MAX,
        };
        assert_eq!(max.to_string().parse(), Ok(max));
    }

    #[test]
    fn refuses_other_client_ids() {
        for s in [
            "",
            "turn-",
            "turn-1-2",
            "turn-1-2-3",
            "turn-1-2-r",
            "turn-1-2-r3-4",
            "turn-+1-2-r3",
            "turn-1-4294967296-r3",
            "turn-1-2-r18446744073709551616",
            "Turn-1-2-r3",
            "web-8f2c",
            " turn-1-2-r3",
        ] {
            assert_eq!(s.parse::<TurnId>(), Err(NotATurnId), "{s:?}");
        }
    }
}
