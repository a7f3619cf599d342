//! How names cross between Rust and the wire, shared by both front ends so that a service
//! declared either way gets the same names.

use heck::{ToSnakeCase, ToUpperCamelCase};
use proc_macro2::Ident;

/// Names a generated client (`FooClient`) cannot give a method of the service: its own
/// (`new`, `channel`), those of the traits it implements (`Clone`, `Debug`), and those of the
/// traits every type has that a call would reach instead of the method (`Into`, `TryInto`,
/// `Borrow`, `ToOwned`, `Any`). A method named so gets a trailing underscore on the client
/// only: `clone` is `client.clone_(request)`; the service trait keeps the name.
pub const CLIENT_RESERVED: &[&str] = &[
    "new",
    "channel",
    "clone",
    "clone_from",
    "fmt",
    "into",
    "try_into",
    "from",
    "try_from",
    "borrow",
    "borrow_mut",
    "to_owned",
    "clone_into",
    "type_id",
];

/// The name of a method on the generated client: the method's own name, with a trailing
/// underscore when it is one of [`CLIENT_RESERVED`].
pub fn client_method_ident(name: &Ident) -> Ident {
    let plain = name.to_string();
    let plain = plain.trim_start_matches("r#");
    if CLIENT_RESERVED.contains(&plain) {
        Ident::new(&format!("{plain}_"), name.span())
    } else {
        name.clone()
    }
}

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

    #[test]
    fn client_methods_named_like_the_clients_own_get_an_underscore() {
        let ident = |name: &str| Ident::new(name, proc_macro2::Span::call_site());
        assert_eq!(client_method_ident(&ident("clone")).to_string(), "clone_");
        assert_eq!(client_method_ident(&ident("new")).to_string(), "new_");
        assert_eq!(client_method_ident(&ident("default")).to_string(), "default");
        let raw = Ident::new_raw("type", proc_macro2::Span::call_site());
        assert_eq!(client_method_ident(&raw).to_string(), "r#type");
    }
}
