//! `scrape.targets` expanded into concrete targets: `host:port`, `host:8001-8008` ranges and
//! `unix:/path/*.sock` globs (expanded again on every round, so workers that come and go
//! with their sockets are followed).

use monasca_config::ScrapeTarget;
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

/// One endpoint to scrape.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// `host` as written (IPv6 in brackets), and a port.
    Tcp {
        host: String,
        port: u16,
    },
    Unix {
        path: PathBuf,
    },
}

impl Target {
    /// The target's identity: `127.0.0.1:8001` or `unix:/run/app/w1.sock`. Used as the
    /// worker's `instance` label and the self-metrics' `target` label.
    pub fn id(&self) -> String {
        match self {
            Target::Tcp { host, port } => format!("{host}:{port}"),
            Target::Unix { path } => format!("unix:{}", path.display()),
        }
    }

    /// The host to connect to (brackets of an IPv6 literal removed).
    pub fn connect_host(&self) -> Option<&str> {
        match self {
            Target::Tcp { host, .. } => Some(
                host.strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host),
            ),
            Target::Unix { .. } => None,
        }
    }
}

/// Expands the configured specs, dropping duplicates; invalid specs (rejected by config
/// validation already) are skipped.
pub fn expand(specs: &[String]) -> Vec<Target> {
    let mut out = Vec::new();
    for spec in specs {
        match ScrapeTarget::parse(spec) {
            Ok(ScrapeTarget::Tcp { host, first, last }) => {
                for port in first..=last {
                    out.push(Target::Tcp {
                        host: host.clone(),
                        port,
                    });
                }
            }
            Ok(ScrapeTarget::Unix { pattern }) => {
                if has_wildcard(&pattern) {
                    out.extend(glob(&pattern).into_iter().map(|path| Target::Unix { path }));
                } else {
                    // A literal path is always a target: a missing socket is a down worker.
                    out.push(Target::Unix {
                        path: PathBuf::from(pattern),
                    });
                }
            }
            Err(_) => {}
        }
    }
    out.sort();
    out.dedup();
    out
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The sockets matching an absolute pattern whose components may hold `*`, `?` and `[...]`.
/// Hidden entries match only patterns that start with a dot. Non-sockets are skipped.
pub fn glob(pattern: &str) -> Vec<PathBuf> {
    let mut current: Vec<PathBuf> = vec![PathBuf::from("/")];
    let components: Vec<Component<'_>> = Path::new(pattern).components().collect();
    for (i, component) in components.iter().enumerate() {
        let Component::Normal(part) = component else {
            continue;
        };
        let Some(part) = part.to_str() else {
            return Vec::new();
        };
        let last = i + 1 == components.len();
        let mut next = Vec::new();
        for base in &current {
            if !has_wildcard(part) {
                next.push(base.join(part));
                continue;
            }
            let Ok(entries) = std::fs::read_dir(base) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with('.') && !part.starts_with('.') {
                    continue;
                }
                if wildcard_match(part.as_bytes(), name.as_bytes()) {
                    next.push(base.join(name));
                }
            }
        }
        current = next;
        if last {
            break;
        }
    }
    let mut out: Vec<PathBuf> = current
        .into_iter()
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket()))
        .collect();
    out.sort();
    out
}

/// Shell-style matching of one path component: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`.
pub fn wildcard_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0usize, 0usize);
    // Where to resume after the last `*`: (pattern index after it, name index it matched to).
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, n));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match class_match(pattern, p, name[n]) {
                Some((true, end)) => Some(end),
                Some((false, _)) => None,
                // An unclosed `[` is a literal.
                None => (name[n] == b'[').then_some(p + 1),
            },
            Some(&c) => (c == name[n]).then_some(p + 1),
            None => None,
        };
        match step {
            Some(next) => {
                p = next;
                n += 1;
            }
            None => match star {
                Some((sp, sn)) => {
                    p = sp;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pattern[start] == b'['`; returns whether it
/// matched and the index after `]`, or None when the class is not closed.
fn class_match(pattern: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let &lo = pattern.get(i)?;
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if pattern.get(i + 1) == Some(&b'-')
            && let Some(&hi) = pattern.get(i + 2)
            && hi != b']'
        {
            matched |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        let m = |p: &str, n: &str| wildcard_match(p.as_bytes(), n.as_bytes());
        assert!(m("*.sock", "w1.sock"));
        assert!(m("*.sock", ".sock"));
        assert!(!m("*.sock", "w1.sock.bak"));
        assert!(m("w?.sock", "w1.sock"));
        assert!(!m("w?.sock", "w10.sock"));
        assert!(m("w[0-9]*.sock", "w10.sock"));
        assert!(!m("w[!0-9]*.sock", "w10.sock"));
        assert!(m("a*b*c", "aXXbYYbZc"));
        assert!(m("*", ""));
        assert!(m("[]]", "]"));
        assert!(m("[", "["));
        assert!(!m("abc", "abd"));
    }

    #[test]
    fn ranges_and_literals_expand() {
        let t = expand(&[
            "127.0.0.1:8001-8003".to_string(),
            "127.0.0.1:8002".to_string(),
            "[::1]:9000".to_string(),
            "unix:/nonexistent/app.sock".to_string(),
            "unix:/nonexistent/*.sock".to_string(),
        ]);
        let ids: Vec<String> = t.iter().map(Target::id).collect();
        assert_eq!(
            ids,
            [
                "127.0.0.1:8001",
                "127.0.0.1:8002",
                "127.0.0.1:8003",
                "[::1]:9000",
                "unix:/nonexistent/app.sock"
            ]
        );
        assert_eq!(t[3].connect_host(), Some("::1"));
    }

    #[test]
    fn globs_find_sockets_only() {
        let dir = std::env::temp_dir().join(format!("scrape-glob-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
        let _a = std::os::unix::net::UnixListener::bind(dir.join("a.sock")).expect("bind");
        let _b = std::os::unix::net::UnixListener::bind(dir.join("sub/b.sock")).expect("bind");
        std::fs::write(dir.join("c.sock"), b"not a socket").expect("write");
        let found = glob(&format!("{}/*.sock", dir.display()));
        assert_eq!(found, [dir.join("a.sock")]);
        let nested = glob(&format!("{}/*/*.sock", dir.display()));
        assert_eq!(nested, [dir.join("sub/b.sock")]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
