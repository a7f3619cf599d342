//! How names cross between Rust and the wire, shared by both front ends so that a service
//! declared either way gets the same names.

use heck::{ToSnakeCase, ToUpperCamelCase};

/// The wire name of a method declared in Rust: `say_hello` → `SayHello`, the way protobuf
/// service definitions spell methods.
pub fn wire_method_name(rust_name: &str) -> String {
    rust_name.trim_start_matches("r#").to_upper_camel_case()
}

/// The Rust name of a method declared on the wire: `SayHello` → `say_hello`.
pub fn rust_method_name(wire_name: &str) -> String {
    wire_name.to_snake_case()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_convert_both_ways() {
        for (rust, wire) in [("say_hello", "SayHello"), ("get", "Get"), ("list_v2_items", "ListV2Items")] {
            assert_eq!(wire_method_name(rust), wire);
            assert_eq!(rust_method_name(wire), rust);
        }
        assert_eq!(wire_method_name("r#type"), "Type");
    }
}
