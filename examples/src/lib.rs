//! Runnable example programs; each is a `[[example]]` of this package, run with
//! `cargo run --example <name>` from the repository root.
