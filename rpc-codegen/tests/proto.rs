//! The `.proto` front end as a build.rs sees it: its errors, and its output for one small
//! service (compared with the reviewed copy in `tests/snapshots/`; regenerate with
//! `UPDATE_SNAPSHOTS=1 cargo test` after reviewing a change).

use std::path::{Path, PathBuf};

use rpc_codegen::proto::Builder;

/// A fresh directory under the system temp dir, with these files in it.
fn scratch(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rpc-codegen-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    dir
}

fn compile(dir: &Path, file: &str) -> Result<(), rpc_codegen::proto::Error> {
    let out = dir.join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    Builder::new().out_dir(&out).emit_rerun_if_changed(false).compile(&[dir.join(file)], &[dir])
}

#[test]
fn a_syntax_error_names_the_file_line_and_column() {
    let dir = scratch("syntax", &[("bad.proto", "syntax = \"proto3\";\nmessage A {\n  int32 x = 1\n}\n")]);
    let err = compile(&dir, "bad.proto").expect_err("syntax error");
    let shown = format!("{err:?}");
    assert!(shown.ends_with("bad.proto:4:1: expected ';' or '[', but found '}'"), "{shown}");
    assert!(shown.starts_with(&dir.display().to_string()), "the path on disk, to click on: {shown}");
    assert_eq!(shown, err.to_string(), "Debug is the readable message, for build.rs's main");
}

#[test]
fn an_unresolved_import_names_the_importing_line() {
    let dir = scratch("import", &[("a.proto", "syntax = \"proto3\";\nimport \"nowhere/b.proto\";\n")]);
    let err = compile(&dir, "a.proto").expect_err("missing import").to_string();
    assert!(err.contains("a.proto:2:1: import 'nowhere/b.proto' not found"), "{err}");
}

#[test]
fn an_undefined_type_names_where_it_is_used() {
    let dir = scratch("undefined", &[("a.proto", "syntax = \"proto3\";\nmessage A {\n  Nope x = 1;\n}\n")]);
    let err = compile(&dir, "a.proto").expect_err("undefined").to_string();
    assert!(err.contains("a.proto:3:3: name 'Nope' is not defined"), "{err}");
}

#[test]
fn a_missing_file_says_so() {
    let dir = scratch("missing", &[]);
    std::fs::create_dir_all(&dir).expect("dir");
    let err = compile(&dir, "absent.proto").expect_err("missing").to_string();
    assert!(err.contains("absent.proto"), "{err}");
    assert!(err.contains("not found") || err.contains("not in any include path"), "{err}");
}

#[test]
fn a_service_whose_client_would_clash_with_a_message_is_refused_clearly() {
    let proto = "syntax = \"proto3\";\npackage p;\nmessage FooClient {}\nservice Foo { rpc Get (FooClient) returns (FooClient); }\n";
    let dir = scratch("clash", &[("clash.proto", proto)]);
    let err = compile(&dir, "clash.proto").expect_err("clash").to_string();
    assert!(err.contains("service `Foo` generates `FooClient`, which clashes"), "{err}");
}

#[test]
fn the_generated_code_for_a_small_service_matches_the_snapshot() {
    let proto = "syntax = \"proto3\";
package helloworld;

// The greeting service.
service Greeter {
  // Sends a greeting.
  rpc SayHello (HelloRequest) returns (HelloReply);
  rpc SayHellos (HelloRequest) returns (stream HelloReply);
}

message HelloRequest { string name = 1; }
message HelloReply { string message = 1; }
";
    let dir = scratch("snapshot", &[("helloworld.proto", proto)]);
    compile(&dir, "helloworld.proto").expect("compiles");
    let generated = std::fs::read_to_string(dir.join("out/helloworld.rs")).expect("output");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/helloworld.proto.rs.snap");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &generated).expect("write snapshot");
    }
    let expected = std::fs::read_to_string(&path).expect("snapshot exists (UPDATE_SNAPSHOTS=1 creates it)");
    assert_eq!(generated, expected, "generated code changed; review, then UPDATE_SNAPSHOTS=1 cargo test");
}
