//! Small validators for names written in a config: PCI addresses, interface names, DNS
//! subdomains, and "did you mean" suggestions for misspelt ones.

/// `dddd:bb:dd.f` in hex, device <= 0x1f and function <= 7 as PCI allows; either case.
pub(super) fn is_bdf(text: &str) -> bool {
    let hex = |s: &str, len: usize| s.len() == len && is_hex(s);
    let mut parts = text.split(':');
    let (Some(domain), Some(bus), Some(dev_fn), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Some((device, function)) = dev_fn.split_once('.') else {
        return false;
    };
    hex(domain, 4)
        && hex(bus, 2)
        && hex(device, 2)
        && u8::from_str_radix(device, 16).is_ok_and(|d| d <= 0x1f)
        && matches!(function, "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7")
}

/// Non-empty and only hexadecimal digits, in either case.
pub(super) fn is_hex(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The kernel's rules for interface names (`dev_valid_name`), so a typo is caught here rather
/// than matching nothing.
pub(super) fn bad_netdev_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 15 {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("reserved name")
    } else if name.contains(['/', ':']) || name.chars().any(char::is_whitespace) {
        Some("contains '/', ':' or whitespace")
    } else {
        None
    }
}

pub fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253
        && text.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The candidate `input` most likely meant: same letters in another case, a prefix either way
/// (`netdev`, `vendor`), or at most two edits away.
pub(super) fn suggest<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let input = input.to_ascii_lowercase();
    candidates
        .iter()
        .filter_map(|&candidate| {
            let lower = candidate.to_ascii_lowercase();
            let score = if lower == input {
                0
            } else if input.len() >= 3 && (lower.starts_with(&input) || input.starts_with(&lower)) {
                1
            } else {
                edit_distance(&input, &lower) + 1
            };
            (score <= 3).then_some((score, candidate))
        })
        .min_by_key(|&(score, _)| score)
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}
