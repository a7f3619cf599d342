//! The macro's contract, checked by compiling: misuse fails with a clear error at the
//! offending span (the expected messages are in `ui/*.stderr`), and valid services compile.

#[test]
fn misuse_is_a_compile_error_at_the_offending_span() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}

#[test]
fn valid_services_compile_and_run() {
    trybuild::TestCases::new().pass("tests/pass/*.rs");
}
