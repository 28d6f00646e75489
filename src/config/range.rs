//! The VF index expression after `#` in `pfNames` and `rootDevices` (`"ens1f0#0,2-7"`).
//!
//! Grammar: comma-separated items, each a decimal index `N` or an inclusive range `A-B` with
//! `A <= B`; no whitespace, no empty items. Indices are 0-based (`virtfnN`).

use std::fmt;
use std::str::FromStr;

/// Highest index accepted. TotalVFs is a 16-bit register, so larger values can only be typos;
/// the cap also keeps every bound small, although storage is per range and never per index.
pub const MAX_VF_INDEX: u32 = 65_535;

/// A parsed `#` expression: sorted, non-overlapping, non-adjacent inclusive ranges, never empty.
///
/// Equal sets compare equal however they were written (`"0-2,3"` == `"3,0,1,2"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VfRange {
    ranges: Vec<(u32, u32)>,
}

/// Why a `#` expression was rejected. `position` counts items from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VfRangeError {
    #[error("no VF index after '#' (expected e.g. \"0,2-7\")")]
    Empty,
    #[error("item {position} is empty (a leading, trailing or doubled comma)")]
    EmptyItem { position: usize },
    #[error(
        "item {position} ({item:?}) is not a decimal index N or range A-B (no spaces or signs)"
    )]
    Malformed { position: usize, item: String },
    #[error("item {position} ({item:?}) starts after it ends ({start} > {end})")]
    Reversed {
        position: usize,
        item: String,
        start: u32,
        end: u32,
    },
    #[error("item {position} ({item:?}) exceeds the highest VF index {MAX_VF_INDEX}")]
    TooLarge { position: usize, item: String },
}

impl VfRange {
    /// Whether VF `index` is selected.
    pub fn contains(&self, index: u32) -> bool {
        // First range that does not end before `index`; it holds `index` or nothing does.
        let at = self.ranges.partition_point(|&(_, end)| end < index);
        self.ranges
            .get(at)
            .is_some_and(|&(start, _)| start <= index)
    }

    /// The inclusive ranges, sorted and merged.
    pub fn ranges(&self) -> &[(u32, u32)] {
        &self.ranges
    }

    fn from_ranges(mut ranges: Vec<(u32, u32)>) -> Self {
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                // Bounds are <= MAX_VF_INDEX, so `+ 1` cannot overflow.
                Some(last) if start <= last.1 + 1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        VfRange { ranges: merged }
    }
}

impl FromStr for VfRange {
    type Err = VfRangeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err(VfRangeError::Empty);
        }
        let mut ranges = Vec::new();
        for (i, item) in text.split(',').enumerate() {
            let position = i + 1;
            if item.is_empty() {
                return Err(VfRangeError::EmptyItem { position });
            }
            let (first, last) = item.split_once('-').unwrap_or((item, item));
            let start = parse_index(first, position, item)?;
            let end = parse_index(last, position, item)?;
            if start > end {
                return Err(VfRangeError::Reversed {
                    position,
                    item: item.to_owned(),
                    start,
                    end,
                });
            }
            ranges.push((start, end));
        }
        Ok(VfRange::from_ranges(ranges))
    }
}

/// Digits only: `u32::from_str` alone would also take `+3`.
fn parse_index(digits: &str, position: usize, item: &str) -> Result<u32, VfRangeError> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VfRangeError::Malformed {
            position,
            item: item.to_owned(),
        });
    }
    // Only digits, so a parse failure can only be an overflow.
    digits
        .parse::<u32>()
        .ok()
        .filter(|&n| n <= MAX_VF_INDEX)
        .ok_or_else(|| VfRangeError::TooLarge {
            position,
            item: item.to_owned(),
        })
}

impl fmt::Display for VfRange {
    /// Canonical form: ascending, merged, `N` for single indices (`"0,2-7"`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(start, end)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}
