//! House rules of the broker's library code that the compiler does not enforce (issue 13):
//! errors are typed, so no function in `broker/src` (the binary's argument parsing in `main.rs`
//! aside) returns `Result<_, String>`. A stringly error cannot be matched on, mapped to a Kafka
//! error code or carry its source, which is how two error-code tables grew before.

#[path = "common/source_files.rs"]
mod source_files;

/// The error type of every `Result<T, E>` written on `line` whose `E` is exactly `String`
/// (generic arguments are split at the top-level comma, so `Result<Map<K, String>, E>` is
/// not one).
fn string_errors(line: &str) -> usize {
    let mut found = 0;
    let mut rest = line;
    while let Some(at) = rest.find("Result<") {
        let args = &rest[at + "Result<".len()..];
        let mut depth = 0usize;
        let mut comma = None;
        let mut end = None;
        for (i, ch) in args.char_indices() {
            match ch {
                '<' | '(' | '[' => depth += 1,
                '>' | ')' | ']' if depth == 0 => {
                    end = Some(i);
                    break;
                }
                '>' | ')' | ']' => depth -= 1,
                ',' if depth == 0 => comma = Some(i),
                _ => {}
            }
        }
        if let (Some(c), Some(e)) = (comma, end) {
            if args[c + 1..e].trim() == "String" {
                found += 1;
            }
        }
        rest = args;
    }
    found
}

#[test]
fn no_stringly_typed_errors_in_library_code() {
    let src = source_files::src_dir();
    let files = source_files::broker_sources();
    assert!(files.len() > 50, "found the broker's sources");
    let mut offenders = Vec::new();
    for file in files.iter().filter(|f| !f.ends_with("src/main.rs")) {
        let text = std::fs::read_to_string(file).expect("read a source file");
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            if string_errors(line) > 0 {
                let rel = file.strip_prefix(&src).unwrap_or(file);
                offenders.push(format!("src/{}:{}: {}", rel.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "Result<_, String> in library code (use a thiserror enum):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_checker_finds_string_errors_and_only_those() {
    assert_eq!(string_errors("fn f() -> Result<(), String> {"), 1);
    assert_eq!(string_errors("-> Result<Vec<u8>, String>"), 1);
    assert_eq!(
        string_errors("-> Result<BTreeMap<i32, String>, ConfigError>"),
        0
    );
    assert_eq!(string_errors("-> Result<String, Error>"), 0);
    assert_eq!(string_errors("io::Result<String>"), 0);
    assert_eq!(string_errors("(Result<(), String>, Result<u8, String>)"), 2);
}
