//! Fails (exit status 1) on any import cycle among a crate's top-level modules, printing
//! each cycle with the file and line of every edge in it.
//!
//! ```text
//! import-cycles userspace/engine/src
//! ```
//!
//! A top-level module is `src/NAME.rs` or `src/NAME/` (with everything below it); the
//! crate roots `lib.rs` and `main.rs` only declare and re-export, so they are no module.
//! An edge `a -> b` is any `crate::b` path in a file of `a` — in `use` (grouped
//! `use crate::{b, c::D}` included) or written inline — and any `super::` chain that climbs
//! to the crate root before naming `b`. Comments and string literals are ignored, and so is
//! a file's trailing `#[cfg(test)]` module: tests may reach across layers.
//!
//! Why not `cargo modules dependencies --acyclic`: it needs rust-analyzer's whole
//! toolchain pinned to the compiler here; this reads `use` edges, which is the rule
//! docs/ARCHITECTURE.md states, and has no dependencies.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src] = args.as_slice() else {
        eprintln!("usage: import-cycles SRC_DIR   (e.g. userspace/engine/src)");
        return ExitCode::from(2);
    };
    let graph = match Graph::read(Path::new(src)) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("import-cycles: reading {src}: {e}");
            return ExitCode::from(2);
        }
    };
    let cycles = graph.cycles();
    let edges: usize = graph.edges.values().map(BTreeMap::len).sum();
    if cycles.is_empty() {
        println!(
            "import-cycles: {src}: {} modules, {edges} edges, no cycle",
            graph.modules.len()
        );
        return ExitCode::SUCCESS;
    }
    for cycle in &cycles {
        println!("cycle: {}", cycle.join(" -> "));
        for pair in cycle.windows(2) {
            let at = &graph.edges[&pair[0]][&pair[1]];
            println!("  {} -> {}  ({at})", pair[0], pair[1]);
        }
        let component = graph.component_of(&cycle[0]);
        let members: Vec<&str> = component.iter().map(String::as_str).collect();
        println!("  modules tangled with it: {}", members.join(", "));
        for from in &component {
            for (to, at) in graph.edges.get(from).into_iter().flatten() {
                if component.contains(to) {
                    println!("    {from} -> {to}  ({at})");
                }
            }
        }
    }
    println!(
        "import-cycles: {src}: {} cycle(s) among {} modules; every edge must point one way \
         (docs/ARCHITECTURE.md)",
        cycles.len(),
        graph.modules.len()
    );
    ExitCode::FAILURE
}

/// Top-level modules and the edges between them, each with where it was first seen.
#[derive(Debug, Default)]
struct Graph {
    modules: BTreeSet<String>,
    /// `from -> to -> "file:line"`.
    edges: BTreeMap<String, BTreeMap<String, String>>,
}

impl Graph {
    /// Reads every `.rs` file under `src`.
    fn read(src: &Path) -> std::io::Result<Self> {
        let mut files = Vec::new();
        let mut modules = BTreeSet::new();
        for entry in fs::read_dir(src)? {
            let path = entry?.path();
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if path.is_dir() {
                modules.insert(stem.to_owned());
                collect(&path, &mut files)?;
            } else if path.extension().is_some_and(|e| e == "rs") && stem != "lib" && stem != "main"
            {
                modules.insert(stem.to_owned());
                files.push(path);
            }
        }
        let mut graph = Self {
            modules,
            ..Self::default()
        };
        for file in files {
            let rel = file.strip_prefix(src).unwrap_or(&file);
            // The module path of the file: `stats/prometheus.rs` -> [stats, prometheus];
            // `stats/mod.rs` -> [stats].
            let mut path: Vec<String> = rel
                .with_extension("")
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            if path.last().is_some_and(|l| l == "mod") {
                path.pop();
            }
            let text = fs::read_to_string(&file)?;
            graph.add_file(&path, &file.display().to_string(), &text);
        }
        Ok(graph)
    }

    /// Adds the edges of one file of module path `path` (first element: the top-level module).
    fn add_file(&mut self, path: &[String], name: &str, text: &str) {
        let Some(from) = path.first() else { return };
        for (line, target) in references(path, text) {
            if target != *from && self.modules.contains(&target) {
                self.edges
                    .entry(from.clone())
                    .or_default()
                    .entry(target)
                    .or_insert_with(|| format!("{name}:{line}"));
            }
        }
    }

    /// One cycle per strongly connected component with more than one module (Tarjan's
    /// algorithm), each written `a -> b -> … -> a`.
    fn cycles(&self) -> Vec<Vec<String>> {
        let mut t = Tarjan::default();
        for m in &self.modules {
            if !t.index.contains_key(m) {
                t.visit(self, m);
            }
        }
        t.components
            .iter()
            .filter(|c| c.len() > 1)
            .map(|c| self.cycle_in(c))
            .collect()
    }

    /// The strongly connected component that holds `module`.
    fn component_of(&self, module: &str) -> BTreeSet<String> {
        let mut t = Tarjan::default();
        t.visit(self, module);
        t.components
            .into_iter()
            .find(|c| c.contains(module))
            .unwrap_or_default()
    }

    /// A shortest cycle through the smallest module of `component` (a breadth-first
    /// search that stays inside the component).
    fn cycle_in(&self, component: &BTreeSet<String>) -> Vec<String> {
        // INVARIANT: callers pass components of two or more modules.
        let start = component.iter().next().expect("a non-empty component");
        let mut parent: BTreeMap<&String, &String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        while let Some(m) = queue.pop_front() {
            for next in self.edges.get(m).into_iter().flat_map(BTreeMap::keys) {
                if !component.contains(next) {
                    continue;
                }
                if next == start {
                    // Walk back from `m` to `start`, then read it forwards.
                    let mut cycle = vec![start.clone()];
                    let mut at = m;
                    while at != start {
                        cycle.push(at.clone());
                        at = parent[at];
                    }
                    cycle.push(start.clone());
                    cycle.reverse();
                    return cycle;
                }
                if !parent.contains_key(next) && next != start {
                    parent.insert(next, m);
                    queue.push_back(next);
                }
            }
        }
        vec![start.clone()]
    }
}

#[derive(Debug, Default)]
struct Tarjan {
    next: usize,
    index: BTreeMap<String, usize>,
    low: BTreeMap<String, usize>,
    stack: Vec<String>,
    on_stack: BTreeSet<String>,
    components: Vec<BTreeSet<String>>,
}

impl Tarjan {
    fn visit(&mut self, g: &Graph, m: &str) {
        self.index.insert(m.to_owned(), self.next);
        self.low.insert(m.to_owned(), self.next);
        self.next += 1;
        self.stack.push(m.to_owned());
        self.on_stack.insert(m.to_owned());
        for next in g.edges.get(m).into_iter().flat_map(BTreeMap::keys) {
            if !self.index.contains_key(next) {
                self.visit(g, next);
                let low = self.low[m].min(self.low[next]);
                self.low.insert(m.to_owned(), low);
            } else if self.on_stack.contains(next) {
                let low = self.low[m].min(self.index[next]);
                self.low.insert(m.to_owned(), low);
            }
        }
        if self.low[m] == self.index[m] {
            let mut component = BTreeSet::new();
            while let Some(top) = self.stack.pop() {
                self.on_stack.remove(&top);
                let done = top == m;
                component.insert(top);
                if done {
                    break;
                }
            }
            self.components.push(component);
        }
    }
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    Ok(())
}

/// The top-level modules a file refers to, with 1-based line numbers: every `crate::NAME`,
/// `crate::{NAME, …}` and `super::…::NAME` that climbs to the root.
fn references(path: &[String], text: &str) -> Vec<(usize, String)> {
    let code = strip(text);
    let code = match code.find("#[cfg(test)]") {
        Some(at)
            if code[at..]
                .trim_start_matches("#[cfg(test)]")
                .trim_start()
                .starts_with("mod ") =>
        {
            &code[..at]
        }
        _ => &code[..],
    };
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !is_ident(bytes[i]) || (i > 0 && is_ident(bytes[i - 1])) {
            i += 1;
            continue;
        }
        let word = ident_at(code, i);
        let line = code[..i].matches('\n').count() + 1;
        let mut j = i + word.len();
        let rooted = if word == "crate" {
            true
        } else if word == "super" {
            // Count the `super::` chain; it reaches the root when it climbs past the file's depth.
            let mut depth = 1;
            while let Some(rest) = code[j..].strip_prefix("::super") {
                if rest.starts_with(|c: char| c.is_alphanumeric() || c == '_') {
                    break;
                }
                depth += 1;
                j += "::super".len();
            }
            depth >= path.len()
        } else {
            false
        };
        let ws = code[j..].len() - code[j..].trim_start().len();
        if rooted && let Some(rest) = code[j + ws..].strip_prefix("::") {
            let k = j + ws + 2 + (rest.len() - rest.trim_start().len());
            if code[k..].starts_with('{') {
                for name in group_heads(&code[k..]) {
                    out.push((line, name));
                }
            } else if k < bytes.len() && is_ident(bytes[k]) {
                out.push((line, ident_at(code, k).to_owned()));
            }
        }
        i = j.max(i + 1);
    }
    out
}

/// The first name of each item in a `{a, b::c, d::{e}}` group (depth 1 only).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect_head = false;
    for (at, c) in group.char_indices() {
        match c {
            '{' => {
                depth += 1;
                expect_head = depth == 1;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => expect_head = true,
            c if expect_head && depth == 1 && (c.is_alphanumeric() || c == '_') => {
                let name = ident_at(group, at);
                if name != "self" {
                    heads.push(name.to_owned());
                }
                expect_head = false;
            }
            _ => {}
        }
    }
    heads
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn ident_at(s: &str, at: usize) -> &str {
    let end = s[at..]
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .map_or(s.len(), |e| at + e);
    &s[at..end]
}

/// The source with comments and string/char literals blanked (newlines kept, so line
/// numbers stay right). Raw strings `r"…"`/`r#"…"#` are handled; lifetimes are not
/// mistaken for char literals.
fn strip(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |out: &mut String, s: &[u8]| {
        for &c in s {
            out.push(if c == b'\n' { '\n' } else { ' ' });
        }
    };
    while i < b.len() {
        let rest = &b[i..];
        let end = if rest.starts_with(b"//") {
            i + rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len())
        } else if rest.starts_with(b"/*") {
            let mut depth = 0;
            let mut k = i;
            while k < b.len() {
                if b[k..].starts_with(b"/*") {
                    depth += 1;
                    k += 2;
                } else if b[k..].starts_with(b"*/") {
                    depth -= 1;
                    k += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    k += 1;
                }
            }
            k
        } else if (rest.starts_with(b"r\"") || rest.starts_with(b"r#"))
            && (i == 0 || !is_ident(b[i - 1]))
        {
            let hashes = rest[1..].iter().take_while(|&&c| c == b'#').count();
            if rest.get(1 + hashes) == Some(&b'"') {
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                let body = i + 2 + hashes;
                b[body..]
                    .windows(close.len())
                    .position(|w| w == close.as_slice())
                    .map_or(b.len(), |p| body + p + close.len())
            } else {
                i + 1
            }
        } else if rest[0] == b'"' {
            let mut k = i + 1;
            while k < b.len() && b[k] != b'"' {
                k += if b[k] == b'\\' { 2 } else { 1 };
            }
            (k + 1).min(b.len())
        } else if rest[0] == b'\'' && rest.len() >= 3 && (rest[1] == b'\\' || rest[2] == b'\'') {
            // A char literal ('a', '\n', '\''); a lifetime ('a) has no closing quote here.
            let mut k = i + 2;
            while k < b.len() && b[k] != b'\'' {
                k += 1;
            }
            (k + 1).min(b.len())
        } else {
            out.push(char::from(rest[0]));
            i += 1;
            continue;
        };
        blank(&mut out, &b[i..end]);
        i = end;
    }
    // Non-ASCII bytes were pushed one by one as Latin-1; only ASCII matters for paths.
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(files: &[(&str, &str)]) -> Graph {
        let mut g = Graph::default();
        for (path, _) in files {
            g.modules.insert(path.split('/').next().unwrap().to_owned());
        }
        for (path, text) in files {
            let parts: Vec<String> = path.split('/').map(str::to_owned).collect();
            g.add_file(&parts, path, text);
        }
        g
    }

    #[test]
    fn finds_a_two_module_cycle_and_names_its_edges() {
        let g = graph(&[
            ("engine", "use crate::control::Server;\nfn f() {}"),
            ("control", "use crate::{stats, engine::Running};"),
            ("stats", "pub fn s() {}"),
        ]);
        assert_eq!(g.cycles(), vec![vec!["control", "engine", "control"]]);
        assert_eq!(g.edges["engine"]["control"], "engine:1");
    }

    #[test]
    fn finds_a_longer_cycle_through_inline_paths_and_super() {
        let g = graph(&[
            ("a", "fn f() { crate::b::g(); }"),
            ("b", "fn g() { let _ = crate :: c::X; }"),
            ("c/inner", "use super::super::a::f;"),
        ]);
        assert_eq!(g.cycles(), vec![vec!["a", "b", "c", "a"]]);
    }

    #[test]
    fn an_acyclic_graph_passes_and_comments_strings_and_tests_do_not_count() {
        let g = graph(&[
            ("engine", "use crate::{telemetry, control};"),
            (
                "control",
                "use crate::telemetry;\n// crate::engine\nconst S: &str = \"crate::engine\";\n\
                 const R: &str = r#\"crate::engine\"#;\nfn f<'a>(x: &'a u8) -> char { 'x' }\n\
                 #[cfg(test)]\nmod tests { use crate::engine; }",
            ),
            ("telemetry", "use super::helper; use self::x;"),
        ]);
        assert!(g.cycles().is_empty(), "{:?}", g.edges);
        assert_eq!(g.edges["engine"].len(), 2);
        assert!(!g.edges.contains_key("telemetry"));
    }
}
