//! The part of glob(3) that keepalived's `include` uses: `*`, `?` and `[...]` classes (`[!...]`
//! negates, `a-z` ranges) in any path component, results sorted, names starting with `.` matched
//! only by a pattern that starts with `.`. A pattern without metacharacters names one file, which
//! must exist.

use std::path::{Component, Path, PathBuf};

/// Files matching `pattern`, sorted; directories are not returned.
pub fn expand(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    let comps: Vec<Component> = pattern.components().collect();
    for (i, c) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let part = c.as_os_str().to_string_lossy();
        let mut next = Vec::new();
        for base in &found {
            if !matches!(c, Component::Normal(_)) || !has_meta(&part) {
                next.push(base.join(c.as_os_str()));
                continue;
            }
            let dir = if base.as_os_str().is_empty() {
                Path::new(".")
            } else {
                base
            };
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| matches(part.as_bytes(), n.as_bytes()) && (!n.starts_with('.') || part.starts_with('.')))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| base.join(n)));
        }
        found = next;
        if !last {
            found.retain(|p| p.is_dir());
        }
    }
    found.retain(|p| p.is_file());
    found
}

fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Whether `name` matches the one-component pattern `pat`.
pub fn matches(pat: &[u8], name: &[u8]) -> bool {
    // Iterative with one backtrack point for the last '*': linear enough, never recursive.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pat.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
                continue;
            }
            Some(b'?') => {
                p += 1;
                n += 1;
                continue;
            }
            Some(b'[') => {
                if let Some((ok, len)) = class(&pat[p..], name[n])
                    && ok
                {
                    p += len;
                    n += 1;
                    continue;
                } else if class(&pat[p..], name[n]).is_none() && name[n] == b'[' {
                    // An unclosed '[' is a literal.
                    p += 1;
                    n += 1;
                    continue;
                }
            }
            Some(&c) if c == name[n] => {
                p += 1;
                n += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, sn)) => {
                p = sp + 1;
                n = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// A `[...]` class at the start of `pat`: whether `c` is in it and the class's length, or None
/// when the class is not closed.
fn class(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pat.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    loop {
        let &x = pat.get(i)?;
        if x == b']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        if pat.get(i + 1) == Some(&b'-') && pat.get(i + 2).is_some_and(|&y| y != b']') {
            let y = pat[i + 2];
            hit |= (x..=y).contains(&c);
            i += 3;
        } else {
            hit |= x == c;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wildcards() {
        let m = |p: &str, n: &str| matches(p.as_bytes(), n.as_bytes());
        assert!(m("*.conf", "a.conf"));
        assert!(m("*.conf", ".conf"));
        assert!(!m("*.conf", "a.conf.bak"));
        assert!(m("vs-?.conf", "vs-1.conf"));
        assert!(!m("vs-?.conf", "vs-10.conf"));
        assert!(m("vs-[0-9]*", "vs-10.conf"));
        assert!(!m("vs-[!0-9]*", "vs-10.conf"));
        assert!(m("a*b*c", "aXXbYYbc"));
        assert!(m("[]]", "]"));
        assert!(m("[", "["));
        assert!(m("plain", "plain"));
        assert!(!m("plain", "plain2"));
    }

    proptest! {
        #[test]
        fn never_panics(p in "[a-c*?\\[\\]!-]{0,12}", n in "[a-c\\[\\]-]{0,12}") {
            let _ = matches(p.as_bytes(), n.as_bytes());
        }

        #[test]
        fn literal_patterns_match_only_themselves(n in "[a-z.]{1,10}", m in "[a-z.]{1,10}") {
            prop_assert_eq!(matches(n.as_bytes(), m.as_bytes()), n == m);
        }
    }
}
