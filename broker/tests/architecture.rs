//! The broker's layering, enforced (issue 13). A request flows down through the layers, and so
//! may every import: a module may use its own layer and the layers below it, never one above.
//!
//! The test reads every `.rs` file under `broker/src`, maps the file to its module path and the
//! module to a layer through [`TABLE`], collects the `crate::…` paths the code refers to (`use`
//! trees, grouped or not, `super::`/`self::` resolved to absolute paths, and inline paths such
//! as `crate::x::y(…)` in code; comments and string literals are ignored) and fails listing
//! every upward reference as `file:line: module (layer) imports module (layer)`. It also fails
//! when a module is missing from the table (place new modules explicitly), when a table row
//! matches no module, and when an [`ALLOWED`] exception no longer occurs. See
//! `docs/architecture.md`.

#[path = "common/source_files.rs"]
mod source_files;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, bottom first: a module may import from its own layer and the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    /// Knows nothing of the broker: Kafka error codes, frame reading, the request context and
    /// string helpers every layer shares, metrics registry, task tracker, allocation guard.
    Foundation,
    /// Bytes on disk: partition logs (segments, indexes, producer state, epochs, dir health)
    /// and the topic settings they are opened with.
    Storage,
    /// Broker state and the services that own it: configuration, the metadata image and its
    /// quorum (`cluster`), hosted partitions and replication, group coordinator, quotas,
    /// authentication and authorization, node identity. `state::Broker` ties them together.
    Services,
    /// Kafka API handlers: decoded request in, response out, through the services.
    Api,
    /// Connections and the wire protocol front: listeners, TLS/SASL sessions, connection
    /// limits, framing to dispatch, the API table and version negotiation; the admin HTTP
    /// endpoint.
    Network,
    /// Wiring: the crate root (`start`/`open`) and the binary.
    Entry,
}

/// Every module's layer. `"a::*"` places `a` and everything below it; other rows match one
/// module exactly. The crate root is `crate`.
const TABLE: &[(&str, Layer)] = &[
    // Foundation.
    ("protocol", Layer::Foundation),
    ("protocol::errors", Layer::Foundation),
    ("protocol::frame", Layer::Foundation),
    ("protocol::chunked", Layer::Foundation),
    ("file_region", Layer::Foundation),
    ("protocol::context", Layer::Foundation),
    ("metrics", Layer::Foundation),
    ("tasks", Layer::Foundation),
    ("alloc_guard", Layer::Foundation),
    // Storage.
    ("log::*", Layer::Storage),
    ("topic_config", Layer::Storage),
    // Services.
    ("config::*", Layer::Services),
    ("identity", Layer::Services),
    ("state", Layer::Services),
    ("metadata::*", Layer::Services),
    ("cluster::*", Layer::Services),
    ("partition", Layer::Services),
    ("replica_manager", Layer::Services),
    ("replication::*", Layer::Services),
    ("group::*", Layer::Services),
    ("quota", Layer::Services),
    ("fetch_session", Layer::Services),
    ("auth::*", Layer::Services),
    ("txn::*", Layer::Services),
    // API handlers.
    ("api::*", Layer::Api),
    // Network and the wire protocol front.
    ("network::*", Layer::Network),
    ("protocol::dispatch", Layer::Network),
    ("protocol::apis", Layer::Network),
    ("protocol::versions", Layer::Network),
    ("admin_http", Layer::Network),
    // Entry.
    ("crate", Layer::Entry),
    ("main", Layer::Entry),
];

/// Known upward references, `(from module, to module, why)`. This list may only shrink: the
/// test fails when a pair here no longer occurs, so remove it when you fix it.
const ALLOWED: &[(&str, &str, &str)] = &[];

fn layer_of(module: &str) -> Option<Layer> {
    TABLE
        .iter()
        .filter(|(pattern, _)| matches(pattern, module))
        .max_by_key(|(pattern, _)| pattern.len())
        .map(|(_, layer)| *layer)
}

fn matches(pattern: &str, module: &str) -> bool {
    match pattern.strip_suffix("::*") {
        Some(prefix) => module == prefix || module.starts_with(&format!("{prefix}::")),
        None => module == pattern,
    }
}

/// `broker/src/a/b.rs` → `a::b`; `a/mod.rs` → `a`; `lib.rs` → `crate`; `main.rs` → `main`.
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let file = parts.pop().expect("a file name");
    let stem = file.trim_end_matches(".rs");
    if stem != "mod" && !(parts.is_empty() && stem == "lib") {
        parts.push(stem.to_string());
    }
    if parts.is_empty() {
        "crate".to_string()
    } else {
        parts.join("::")
    }
}

/// One reference found in a file: the line and the absolute path (without `crate::`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference {
    line: usize,
    path: Vec<String>,
}

/// Blanks comments (line, nested block, doc) and the contents of string and char literals,
/// keeping newlines so line numbers stay right.
fn strip(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (i == 0 || !ident(c[i - 1]) || c[i - 1] == 'b')
            && matches!(c.get(i + 1), Some('"' | '#'))
            && {
                let mut j = i + 1;
                while c.get(j) == Some(&'#') {
                    j += 1;
                }
                c.get(j) == Some(&'"')
            }
        {
            // Raw string: r"…", r#"…"#, br"…".
            let mut hashes = 0;
            i += 1;
            while c[i] == '#' {
                hashes += 1;
                i += 1;
            }
            out.push_str(&" ".repeat(hashes + 2));
            i += 1;
            while i < c.len() {
                if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
                    out.push_str(&" ".repeat(hashes + 1));
                    i += hashes + 1;
                    break;
                }
                out.push(blank(c[i]));
                i += 1;
            }
        } else if c[i] == '"' {
            out.push(' ');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < c.len() {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c[i] == '\'' && c.get(i + 1) == Some(&'\\') {
            // Escaped char literal: '\n', '\'', '\u{..}'.
            out.push_str("  ");
            i += 2;
            while i < c.len() && c[i] != '\'' {
                out.push(' ');
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else if c[i] == '\'' && c.get(i + 2) == Some(&'\'') {
            out.push_str("   ");
            i += 3;
        } else {
            // Anything else, lifetimes included.
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    PathSep,
    Punct(char),
}

/// Tokens with their line numbers; whitespace dropped.
fn tokens(stripped: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = stripped.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch.is_alphanumeric() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(c[start..i].iter().collect()), line));
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push((Tok::PathSep, line));
            i += 2;
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

/// Resolves a path as written in `module` (inline module path included) to an absolute one,
/// or None when it does not start at `crate`, `super` or `self` (external crates, locals).
fn resolve(module: &[String], path: &[String]) -> Option<Vec<String>> {
    let mut base: Vec<String> = module.to_vec();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &path[1..];
        }
        Some("super" | "self") => {
            while let Some(seg) = rest.first().map(String::as_str) {
                match seg {
                    "super" => {
                        base.pop()?;
                    }
                    "self" => {}
                    _ => break,
                }
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// Expands one `use` tree starting at `toks[*i]` into full paths (`prefix` already parsed),
/// stopping before the `,`, `}` or `;` that ends it.
fn use_tree(
    toks: &[(Tok, usize)],
    i: &mut usize,
    prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, usize)>,
) {
    let mut path = prefix;
    let line = toks.get(*i).map_or(0, |t| t.1);
    loop {
        match toks.get(*i).map(|t| &t.0) {
            Some(Tok::Ident(name)) if name == "as" => {
                *i += 2; // `as alias`
            }
            Some(Tok::Ident(name)) => {
                if name != "self" || path.is_empty() {
                    path.push(name.clone());
                }
                *i += 1;
            }
            Some(Tok::PathSep) => *i += 1,
            Some(Tok::Punct('*')) => *i += 1,
            Some(Tok::Punct('{')) => {
                *i += 1;
                loop {
                    match toks.get(*i).map(|t| &t.0) {
                        Some(Tok::Punct('}')) => {
                            *i += 1;
                            return;
                        }
                        Some(Tok::Punct(',')) => *i += 1,
                        None => return,
                        _ => use_tree(toks, i, path.clone(), out),
                    }
                }
            }
            _ => {
                out.push((path, line));
                return;
            }
        }
    }
}

/// Every `crate`-relative reference in `src`, the file of `module`: `use` trees and inline
/// `crate::`/`super::`/`self::` paths, resolved against inline `mod x { … }` blocks. `known`
/// resolves a `use` that names a child module without `self::` (as `pub use image::X`).
fn references(module: &str, src: &str, known: &BTreeSet<String>) -> Vec<Reference> {
    let toks = tokens(&strip(src));
    let file_mod: Vec<String> = if module == "crate" {
        Vec::new()
    } else {
        module.split("::").map(str::to_string).collect()
    };
    let ident = |k: usize| match toks.get(k).map(|t| &t.0) {
        Some(Tok::Ident(s)) => Some(s.as_str()),
        _ => None,
    };
    let mut inline: Vec<(String, usize)> = Vec::new(); // (name, brace depth at opening)
    let mut depth = 0;
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let here: Vec<String> = file_mod
            .iter()
            .cloned()
            .chain(inline.iter().map(|(n, _)| n.clone()))
            .collect();
        match &toks[i].0 {
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Tok::Punct('}') => {
                depth -= 1;
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                i += 1;
            }
            Tok::Ident(kw)
                if kw == "mod" && toks.get(i + 2).map(|t| &t.0) == Some(&Tok::Punct('{')) =>
            {
                inline.push((ident(i + 1).unwrap_or_default().to_string(), depth));
                depth += 1;
                i += 3;
            }
            Tok::Ident(kw) if kw == "use" && (i == 0 || toks[i - 1].0 != Tok::PathSep) => {
                i += 1;
                let mut paths = Vec::new();
                use_tree(&toks, &mut i, Vec::new(), &mut paths);
                for (path, line) in paths {
                    let abs = resolve(&here, &path).or_else(|| {
                        let child = here.iter().chain(path.first()).cloned().collect::<Vec<_>>();
                        known
                            .contains(&child.join("::"))
                            .then(|| here.iter().chain(&path).cloned().collect())
                    });
                    if let Some(path) = abs {
                        out.push(Reference { line, path });
                    }
                }
            }
            Tok::Ident(first)
                if matches!(first.as_str(), "crate" | "super" | "self")
                    && toks.get(i + 1).map(|t| &t.0) == Some(&Tok::PathSep)
                    && (i == 0 || toks[i - 1].0 != Tok::PathSep) =>
            {
                let line = toks[i].1;
                let mut path = vec![first.clone()];
                i += 1;
                while toks.get(i).map(|t| &t.0) == Some(&Tok::PathSep) {
                    match ident(i + 1) {
                        Some(seg) => path.push(seg.to_string()),
                        None => break, // `crate::{…}` outside `use` or a turbofish
                    }
                    i += 2;
                }
                if let Some(path) = resolve(&here, &path) {
                    out.push(Reference { line, path });
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// The module a path lands in: its longest prefix that is a module (the crate root if none).
fn target_module(path: &[String], known: &BTreeSet<String>) -> String {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| known.contains(m))
        .unwrap_or_else(|| "crate".to_string())
}

#[test]
fn imports_only_point_down() {
    let src = source_files::src_dir();
    let files = source_files::broker_sources();
    let modules: BTreeMap<String, PathBuf> = files
        .iter()
        .map(|f| (module_of(f.strip_prefix(&src).unwrap()), f.clone()))
        .collect();
    let known: BTreeSet<String> = modules.keys().cloned().collect();

    let mut problems = Vec::new();
    for m in &known {
        if layer_of(m).is_none() {
            problems.push(format!(
                "module {m} is not in the layer table (tests/architecture.rs TABLE)"
            ));
        }
    }
    for (pattern, _) in TABLE {
        if !known.iter().any(|m| matches(pattern, m)) {
            problems.push(format!("layer table row {pattern:?} matches no module"));
        }
    }

    let mut seen_allowed = BTreeSet::new();
    for (module, file) in &modules {
        let Some(from) = layer_of(module) else {
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read source");
        let mut reported = BTreeSet::new();
        for r in references(module, &text, &known) {
            let to_module = target_module(&r.path, &known);
            if !reported.insert((r.line, to_module.clone())) {
                continue; // `use crate::a::{B, C}`: one line per module is enough
            }
            let Some(to) = layer_of(&to_module) else {
                continue;
            };
            if to <= from {
                continue;
            }
            if let Some(a) = ALLOWED
                .iter()
                .find(|(f, t, _)| f == module && *t == to_module)
            {
                seen_allowed.insert(*a);
                continue;
            }
            problems.push(format!(
                "broker/src/{}:{}: {module} ({from:?}) imports {to_module} ({to:?})",
                file.strip_prefix(&src).unwrap().display(),
                r.line
            ));
        }
    }
    for a in ALLOWED {
        if !seen_allowed.contains(a) {
            problems.push(format!(
                "allowed exception {} -> {} no longer occurs: remove it from ALLOWED",
                a.0, a.1
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "layering violations (see docs/architecture.md):\n{}",
        problems.join("\n")
    );
}

/// The API-layer modules that may name `state::Broker`: only `api::services`, where the broker
/// is taken apart into the bundles handlers receive. Every handler gets its services, never the
/// broker.
const MAY_NAME_THE_BROKER: &[&str] = &["api::services"];

/// Whether `code` (comments and strings stripped) names the type `Broker` (not `BrokerId`).
fn names_broker(code: &str) -> bool {
    code.match_indices("Broker").any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = code[i + "Broker".len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !ident(before) && !ident(after)
    })
}

#[test]
fn handlers_get_their_services_not_the_broker() {
    let src = source_files::src_dir();
    let mut problems = Vec::new();
    let mut naming = BTreeSet::new();
    for file in source_files::broker_sources() {
        let module = module_of(file.strip_prefix(&src).unwrap());
        if !module.starts_with("api::") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        if !names_broker(&strip(&text)) {
            continue;
        }
        naming.insert(module.clone());
        if !MAY_NAME_THE_BROKER.contains(&module.as_str()) {
            problems.push(format!(
                "{module} uses state::Broker: take a bundle from api::services instead"
            ));
        }
    }
    for m in MAY_NAME_THE_BROKER {
        if !naming.contains(*m) {
            problems.push(format!(
                "{m} no longer names the broker: the check would pass for the wrong reason"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn broker_is_found_as_a_type_name_only() {
    assert!(names_broker("fn f(b: &Arc<Broker>)"));
    assert!(names_broker("use crate::state::Broker;"));
    assert!(!names_broker("BrokerId(1) and ReplicaBroker and broker"));
    assert!(!names_broker(&strip(
        "// a Broker in a comment\nlet s = \"Broker\";"
    )));
}

// The parser on small snippets.

fn refs(module: &str, src: &str) -> Vec<(usize, String)> {
    let known: BTreeSet<String> = ["a", "a::b", "a::b::c", "x", "x::y"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    references(module, src, &known)
        .into_iter()
        .map(|r| (r.line, r.path.join("::")))
        .collect()
}

#[test]
fn grouped_and_nested_use_trees() {
    let src = "use crate::{a::b::{self, c::D}, x::y as z, x::*};\nuse std::io;";
    assert_eq!(
        refs("a", src),
        vec![
            (1, "a::b".to_string()),
            (1, "a::b::c::D".to_string()),
            (1, "x::y".to_string()),
            (1, "x".to_string()),
        ]
    );
}

#[test]
fn use_tree_over_several_lines() {
    let src = "use crate::a::{\n    B,\n    b::C,\n};";
    assert_eq!(
        refs("x", src),
        vec![(2, "a::B".to_string()), (3, "a::b::C".to_string())]
    );
}

#[test]
fn super_and_self_resolve_against_the_file_and_inline_modules() {
    let src = "use super::c::E;\nuse self::c::F;\nmod tests {\n    use super::*;\n    use super::super::G;\n}\nuse super::H;";
    assert_eq!(
        refs("a::b", src),
        vec![
            (1, "a::c::E".to_string()),
            (2, "a::b::c::F".to_string()),
            (4, "a::b".to_string()),
            (5, "a::G".to_string()),
            (7, "a::H".to_string()),
        ]
    );
}

#[test]
fn child_module_named_without_self() {
    assert_eq!(
        refs("a", "pub use b::{C, c::D};"),
        vec![(1, "a::b::C".to_string()), (1, "a::b::c::D".to_string())]
    );
    assert!(refs("a", "use tokio::sync::Notify;").is_empty());
}

#[test]
fn inline_paths_in_code() {
    let src = "fn f() {\n    let v = crate::x::y::build(1);\n    super::b::run();\n    other::crate_like::x();\n}\npub(crate) fn g() {}";
    assert_eq!(
        refs("a::b", src),
        vec![(2, "x::y::build".to_string()), (3, "a::b::run".to_string())]
    );
}

#[test]
fn comments_strings_and_chars_are_ignored() {
    let src = "//! Docs name crate::x::y.\n/// and `crate::a::b`\n// use crate::x;\n/* crate::x /* nested crate::a */ still crate::x */\nfn f<'a>(s: &'a str) {\n    let _ = \"crate::x::y\";\n    let _ = r#\"use crate::x;\"#;\n    let _ = '\"';\n    let _ = '{';\n    crate::a::f();\n}";
    assert_eq!(refs("x", src), vec![(10, "a::f".to_string())]);
}

#[test]
fn modules_and_layers() {
    assert_eq!(module_of(Path::new("lib.rs")), "crate");
    assert_eq!(module_of(Path::new("main.rs")), "main");
    assert_eq!(module_of(Path::new("api/mod.rs")), "api");
    assert_eq!(
        module_of(Path::new("log/partition_log/replica.rs")),
        "log::partition_log::replica"
    );
    assert_eq!(layer_of("api::fetch"), Some(Layer::Api));
    assert_eq!(layer_of("protocol::dispatch"), Some(Layer::Network));
    assert_eq!(layer_of("protocol::errors"), Some(Layer::Foundation));
    assert_eq!(layer_of("protocol::unplaced"), None);
    let known: BTreeSet<String> = ["a", "a::b"].iter().map(|s| s.to_string()).collect();
    let path = |p: &str| p.split("::").map(str::to_string).collect::<Vec<_>>();
    assert_eq!(target_module(&path("a::b::Type::new"), &known), "a::b");
    assert_eq!(target_module(&path("Config"), &known), "crate");
}
