//! keepalived.conf syntax: whitespace-separated words, `{ }` blocks, `!` and `#` comments to the end
//! of the line, double-quoted strings, and `include GLOB` lines spliced in where they stand (as
//! keepalived does, so an include may sit inside a block). The result is a tree of [`Node`]s, each
//! remembering its file and line so that every warning can name them.
//!
//! keepalived is line-oriented: a keyword takes the words that follow it on its line; a `{` on the
//! same line or alone at the start of the next line opens its block, and `}` may close a block on
//! any line (`group { VI_1 VI_2 }`).

use std::path::{Path, PathBuf};

use super::{ImportError, Loc, Warning, glob};

/// Includes nested deeper than this are refused (keepalived's own limit is lower); it also stops
/// a file that includes itself.
const MAX_INCLUDE_DEPTH: usize = 16;

/// One keyword with its words and, when it has one, its block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub keyword: String,
    pub args: Vec<String>,
    pub block: Option<Vec<Node>>,
    pub loc: Loc,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    Open,
    Close,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    loc: Loc,
    /// The first token of its line: ends the previous statement's words.
    first: bool,
}

/// Every file read so far, in order: [`Loc::file`] indexes it.
#[derive(Default, Debug)]
pub struct Sources {
    pub files: Vec<String>,
    /// Lines read so far, all files together (see [`Loc::seq`]).
    pub lines: usize,
}

/// Reads `path` and everything it includes and parses it into a tree.
pub fn parse_file(path: &Path, src: &mut Sources, warns: &mut Vec<Warning>) -> Result<Vec<Node>, ImportError> {
    let text = std::fs::read(path).map_err(|e| ImportError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut toks = Vec::new();
    lex(&text, path, path.parent(), 0, src, warns, &mut toks)?;
    tree(&toks, src)
}

/// Parses `text` as if read from a file named `name`; includes are resolved against `base`.
pub fn parse_str(
    text: &str,
    name: &str,
    base: Option<&Path>,
    src: &mut Sources,
    warns: &mut Vec<Warning>,
) -> Result<Vec<Node>, ImportError> {
    let mut toks = Vec::new();
    lex(text.as_bytes(), Path::new(name), base, 0, src, warns, &mut toks)?;
    tree(&toks, src)
}

/// Splits one file into tokens, splicing in the tokens of included files.
fn lex(
    text: &[u8],
    path: &Path,
    dir: Option<&Path>,
    depth: usize,
    src: &mut Sources,
    warns: &mut Vec<Warning>,
    out: &mut Vec<Token>,
) -> Result<(), ImportError> {
    let file = src.files.len();
    src.files.push(path.display().to_string());
    // Bytes that are not UTF-8 are replaced rather than refused: they can only be in values,
    // which then fail their own checks with a readable message.
    let text = String::from_utf8_lossy(text);
    for (n, line) in text.lines().enumerate() {
        src.lines += 1;
        let loc = Loc {
            file,
            line: n + 1,
            seq: src.lines,
        };
        let words = split_line(line).map_err(|reason| ImportError::Syntax {
            at: format!("{}:{}", path.display(), loc.line),
            reason,
        })?;
        if let Some(Tok::Word(w)) = words.first()
            && w == "include"
        {
            let pattern: Vec<&str> = words[1..]
                .iter()
                .filter_map(|t| match t {
                    Tok::Word(w) => Some(w.as_str()),
                    _ => None,
                })
                .collect();
            include(&pattern, path, dir, loc, depth, src, warns, out)?;
            continue;
        }
        for (i, tok) in words.into_iter().enumerate() {
            out.push(Token {
                tok,
                loc,
                first: i == 0,
            });
        }
    }
    Ok(())
}

/// `include PATTERN`: every file the glob matches, in sorted order, relative to `dir`.
#[allow(clippy::too_many_arguments)]
fn include(
    pattern: &[&str],
    path: &Path,
    dir: Option<&Path>,
    loc: Loc,
    depth: usize,
    src: &mut Sources,
    warns: &mut Vec<Warning>,
    out: &mut Vec<Token>,
) -> Result<(), ImportError> {
    let at = format!("{}:{}", path.display(), loc.line);
    let [pattern] = pattern else {
        return Err(ImportError::Syntax {
            at,
            reason: "include takes one file name or glob pattern".into(),
        });
    };
    if depth >= MAX_INCLUDE_DEPTH {
        return Err(ImportError::Syntax {
            at,
            reason: format!("includes nested deeper than {MAX_INCLUDE_DEPTH} (does a file include itself?)"),
        });
    }
    let full = match dir {
        Some(d) if !Path::new(pattern).is_absolute() => d.join(pattern),
        _ => PathBuf::from(pattern),
    };
    let files = glob::expand(&full);
    if files.is_empty() {
        warns.push(Warning::new(
            loc,
            "include",
            format!("no file matches '{}'; nothing included", full.display()),
        ));
    }
    for f in files {
        let text = std::fs::read(&f).map_err(|e| ImportError::Read {
            path: f.display().to_string(),
            reason: format!("{e} (included from {at})"),
        })?;
        lex(&text, &f, f.parent(), depth + 1, src, warns, out)?;
    }
    Ok(())
}

/// The tokens of one line: comments dropped, quotes removed, braces split off words.
fn split_line(line: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut in_word = false;
    let mut chars = line.chars();
    let flush = |cur: &mut String, in_word: &mut bool, out: &mut Vec<Tok>| {
        if *in_word {
            out.push(Tok::Word(std::mem::take(cur)));
            *in_word = false;
        }
    };
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' => quoted = false,
                '\\' => match chars.next() {
                    Some(n @ ('"' | '\\')) => cur.push(n),
                    Some(n) => {
                        cur.push('\\');
                        cur.push(n);
                    }
                    None => cur.push('\\'),
                },
                c => cur.push(c),
            }
            continue;
        }
        match c {
            '"' => {
                quoted = true;
                in_word = true;
            }
            '!' | '#' => break,
            '{' | '}' => {
                flush(&mut cur, &mut in_word, &mut out);
                out.push(if c == '{' { Tok::Open } else { Tok::Close });
            }
            c if c.is_whitespace() => flush(&mut cur, &mut in_word, &mut out),
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err("unterminated quoted string".into());
    }
    flush(&mut cur, &mut in_word, &mut out);
    Ok(out)
}

/// Builds the tree from the token stream.
fn tree(toks: &[Token], src: &Sources) -> Result<Vec<Node>, ImportError> {
    let mut pos = 0;
    let nodes = block(toks, &mut pos, None, src)?;
    Ok(nodes)
}

fn at(src: &Sources, loc: Loc) -> String {
    format!("{}:{}", src.files.get(loc.file).map_or("?", |s| s.as_str()), loc.line)
}

/// Statements until the `}` that closes the block opened at `opened` (or the end at top level).
/// Iterative over statements; recursion only follows nesting, which is bounded by the input size
/// but guarded anyway so that a hostile file cannot overflow the stack.
fn block(
    toks: &[Token],
    pos: &mut usize,
    opened: Option<(Loc, usize)>,
    src: &Sources,
) -> Result<Vec<Node>, ImportError> {
    let mut out = Vec::new();
    let depth = opened.map_or(0, |(_, d)| d);
    if depth > 64 {
        let loc = opened.map(|(l, _)| l).unwrap_or_default();
        return Err(ImportError::Syntax {
            at: at(src, loc),
            reason: "blocks nested more than 64 deep".into(),
        });
    }
    loop {
        let Some(t) = toks.get(*pos) else {
            return match opened {
                Some((loc, _)) => Err(ImportError::Syntax {
                    at: at(src, loc),
                    reason: "this block's '{' is never closed".into(),
                }),
                None => Ok(out),
            };
        };
        match &t.tok {
            Tok::Close => {
                *pos += 1;
                return match opened {
                    Some(_) => Ok(out),
                    None => Err(ImportError::Syntax {
                        at: at(src, t.loc),
                        reason: "'}' without a matching '{'".into(),
                    }),
                };
            }
            Tok::Open => {
                return Err(ImportError::Syntax {
                    at: at(src, t.loc),
                    reason: "'{' without a keyword before it".into(),
                });
            }
            Tok::Word(w) => {
                let loc = t.loc;
                let keyword = w.clone();
                *pos += 1;
                let mut args = Vec::new();
                while let Some(Token {
                    tok: Tok::Word(a),
                    first: false,
                    ..
                }) = toks.get(*pos)
                {
                    args.push(a.clone());
                    *pos += 1;
                }
                // A '{' on the same line, or alone at the start of the next one, opens the block.
                let sub = match toks.get(*pos) {
                    Some(Token {
                        tok: Tok::Open,
                        loc: oloc,
                        ..
                    }) => {
                        let oloc = *oloc;
                        *pos += 1;
                        Some(block(toks, pos, Some((oloc, depth + 1)), src)?)
                    }
                    _ => None,
                };
                out.push(Node {
                    keyword,
                    args,
                    block: sub,
                    loc,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<Vec<Node>, ImportError> {
        parse_str(text, "t.conf", None, &mut Sources::default(), &mut Vec::new())
    }

    fn kw(nodes: &[Node]) -> Vec<(String, Vec<String>, usize)> {
        nodes
            .iter()
            .map(|n| (n.keyword.clone(), n.args.clone(), n.loc.line))
            .collect()
    }

    #[test]
    fn comments_and_quotes() {
        let n = parse(
            "! a comment\n# another\nrouter_id LVS_1 ! trailing\nscript \"/bin/check --x 'a b' # not a comment\"\n",
        )
        .unwrap();
        assert_eq!(
            kw(&n),
            vec![
                ("router_id".into(), vec!["LVS_1".into()], 3),
                ("script".into(), vec!["/bin/check --x 'a b' # not a comment".into()], 4),
            ]
        );
        // An escaped quote inside quotes, and an empty quoted string is still a word.
        let n = parse(r#"notify "say \"hi\"" """#).unwrap();
        assert_eq!(n[0].args, vec!["say \"hi\"".to_string(), String::new()]);
    }

    #[test]
    fn nested_blocks_and_brace_placement() {
        let text = "virtual_server 198.18.0.10 80\n{\n  real_server 198.18.2.11 80 {\n    HTTP_GET {\n      url{ path /health\n digest abc }\n    }\n  }\n}\nvrrp_sync_group G { group { VI_1 VI_2 } }\n";
        let n = parse(text).unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].args, vec!["198.18.0.10", "80"]);
        let rs = &n[0].block.as_ref().unwrap()[0];
        assert_eq!((rs.keyword.as_str(), rs.loc.line), ("real_server", 3));
        let http = &rs.block.as_ref().unwrap()[0];
        let url = &http.block.as_ref().unwrap()[0];
        assert_eq!(url.keyword, "url");
        assert_eq!(
            kw(url.block.as_ref().unwrap()),
            vec![
                ("path".into(), vec!["/health".into()], 5),
                ("digest".into(), vec!["abc".into()], 6)
            ]
        );
        // Line-oriented, as keepalived: the second name is the first one's word; list blocks
        // (group, unicast_peer) are read as every word of every line.
        let group = &n[1].block.as_ref().unwrap()[0];
        let members = kw(group.block.as_ref().unwrap());
        assert_eq!(members, vec![("VI_1".into(), vec!["VI_2".into()], 10)]);
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse("a {\n b 1\n").unwrap_err().to_string();
        assert!(e.contains("t.conf:1") && e.contains("never closed"), "{e}");
        let e = parse("a 1\n}\n").unwrap_err().to_string();
        assert!(e.contains("t.conf:2") && e.contains("without a matching"), "{e}");
        let e = parse("a\nb \"open\n").unwrap_err().to_string();
        assert!(e.contains("t.conf:2") && e.contains("unterminated"), "{e}");
        let e = parse("{ a }").unwrap_err().to_string();
        assert!(e.contains("t.conf:1"), "{e}");
    }

    #[test]
    fn includes_are_spliced_with_globs_relative_to_the_file() {
        let dir = std::env::temp_dir().join(format!("xvs-import-parse-{}", std::process::id()));
        let sub = dir.join("conf.d");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(
            dir.join("main.conf"),
            "global_defs {\n include conf.d/*.conf\n}\nlast 1\n",
        )
        .unwrap();
        std::fs::write(sub.join("b.conf"), "b 2\n").unwrap();
        std::fs::write(sub.join("a.conf"), "a 1\n").unwrap();
        std::fs::write(sub.join("skip.txt"), "nope\n").unwrap();
        let mut src = Sources::default();
        let mut warns = Vec::new();
        let n = parse_file(&dir.join("main.conf"), &mut src, &mut warns).unwrap();
        let inner = n[0].block.as_ref().unwrap();
        assert_eq!(inner.iter().map(|x| x.keyword.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert!(src.files[inner[0].loc.file].ends_with("a.conf"));
        assert_eq!(n[1].keyword, "last");
        assert!(warns.is_empty());
        // A self-include is stopped, not looped on.
        std::fs::write(dir.join("loop.conf"), "include loop.conf\n").unwrap();
        let e = parse_file(&dir.join("loop.conf"), &mut Sources::default(), &mut warns).unwrap_err();
        assert!(e.to_string().contains("nested deeper"), "{e}");
        // No match is a warning.
        parse_str(
            "include /nonexistent/xvs/*.conf\n",
            "t.conf",
            None,
            &mut Sources::default(),
            &mut warns,
        )
        .unwrap();
        assert!(warns.iter().any(|w| w.option == "include"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse(&text);
        }

        #[test]
        fn random_token_soup_never_panics(words in proptest::collection::vec(
            prop_oneof![Just("{"), Just("}"), Just("\n"), Just("\""), Just("!"), Just("a"), Just("b 1"), Just(" ")],
            0..200,
        )) {
            let _ = parse(&words.concat());
        }
    }
}
