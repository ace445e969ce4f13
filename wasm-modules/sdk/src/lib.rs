//! # wedge-sdk — write a Wedge module as its logic only
//!
//! A module is a type that implements [`Module`], registered with [`module!`]:
//!
//! ```ignore
//! use wedge_sdk::{Module, host};
//!
//! struct Echo;
//!
//! impl Module for Echo {
//!     fn init(_config: &str) -> Result<Self, String> {
//!         Ok(Echo)
//!     }
//!     fn on_message(&mut self, topic: &str, payload: &[u8]) -> Result<(), String> {
//!         host::publish(&format!("echo/{topic}"), payload)
//!     }
//! }
//!
//! wedge_sdk::module!(Echo);
//! ```
//!
//! The SDK owns what every module used to repeat: the bindings of the WIT world
//! (`wasm-modules/wit/wedge.wit`, generated once here), the export glue and its `unsafe`
//! allowance, keeping the instance's state between calls, and helpers for configuration and
//! readings. The node creates one value of the type per instance (`init`, with the
//! deployment's config as JSON text) and calls it for each message and tick; a trap
//! (panic) ends the instance and the node restarts it, an `Err` is counted and logged.
//!
//! Built for `wasm32-wasip2` it is a component; built natively (unit tests of a module's
//! logic) the host calls are not available and must not be reached.

// wit-bindgen's generated glue between the component ABI and Rust is unsafe by nature; it
// stays in this crate and in the expansion of `module!`.
#![allow(unsafe_code)]

// The generated code names this crate by path, also from inside it.
extern crate self as wedge_sdk;

/// The generated bindings of the `module` world. Modules use [`host`] and [`Module`]
/// instead; this is public for the expansion of [`module!`].
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "module",
        pub_export_macro: true,
        default_bindings_module: "wedge_sdk::bindings",
        runtime_path: "wedge_sdk::__private::wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}

/// What the node offers a module (the WIT `host` interface).
pub mod host {
    pub use crate::bindings::wedge::module::host::{
        Level, emit, kv_delete, kv_get, kv_set, log, now_ms, publish,
    };
}

pub use host::Level;

/// A Wedge module: one value per instance, made by [`Module::init`] from the deployment's
/// configuration, then called for each matching message and on each tick.
pub trait Module: Sized + 'static {
    /// Makes the instance from the deployment's `config` (JSON text; empty when the
    /// deployment has none). An error refuses to start: the node reports it and retries.
    fn init(config: &str) -> Result<Self, String>;

    /// Called for each local MQTT message matching the deployment's subscriptions.
    fn on_message(&mut self, _topic: &str, _payload: &[u8]) -> Result<(), String> {
        Ok(())
    }

    /// Called every tick period of the deployment, with the wall-clock time.
    fn on_tick(&mut self, _now_ms: u64) -> Result<(), String> {
        Ok(())
    }
}

/// Registers `$ty` (a [`Module`]) as the component's implementation of the world.
#[macro_export]
macro_rules! module {
    ($ty:ty) => {
        #[allow(unsafe_code)]
        const _: () = {
            struct WedgeModule;

            ::std::thread_local! {
                static INSTANCE: ::std::cell::RefCell<::std::option::Option<$ty>> =
                    const { ::std::cell::RefCell::new(::std::option::Option::None) };
            }

            fn with<T>(
                f: impl FnOnce(&mut $ty) -> ::std::result::Result<T, ::std::string::String>,
            ) -> ::std::result::Result<T, ::std::string::String> {
                INSTANCE.with(|cell| match cell.borrow_mut().as_mut() {
                    ::std::option::Option::Some(instance) => f(instance),
                    ::std::option::Option::None => {
                        ::std::result::Result::Err("the module is not initialised".into())
                    }
                })
            }

            impl $crate::bindings::Guest for WedgeModule {
                fn init(
                    config: ::std::string::String,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    let instance = <$ty as $crate::Module>::init(&config)?;
                    INSTANCE
                        .with(|cell| *cell.borrow_mut() = ::std::option::Option::Some(instance));
                    ::std::result::Result::Ok(())
                }

                fn on_message(
                    topic: ::std::string::String,
                    payload: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    with(|m| $crate::Module::on_message(m, &topic, &payload))
                }

                fn on_tick(now_ms: u64) -> ::std::result::Result<(), ::std::string::String> {
                    with(|m| $crate::Module::on_tick(m, now_ms))
                }
            }

    $crate::bindings::export!(WedgeModule with_types_in $crate::bindings);
        };
    };
}

use serde::de::DeserializeOwned;

/// The numeric reading in a payload: a JSON number, or a JSON object with a numeric
/// `"value"`. `None` for anything else.
pub fn reading(payload: &[u8]) -> Option<f64> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    match &value {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::Object(map) => map.get("value")?.as_f64(),
        _ => None,
    }
}

/// Parses a module's JSON configuration; empty text means the type's defaults.
pub fn config<T: DeserializeOwned + Default>(json: &str) -> Result<T, String> {
    if json.trim().is_empty() {
        return Ok(T::default());
    }
    serde_json::from_str(json).map_err(|e| format!("invalid config: {e}"))
}

/// The unsigned number under `key` in a JSON object, for fixtures whose whole config is
/// one or two numbers; `None` when absent or not a number.
pub fn config_number(config: &str, key: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(config)
        .ok()?
        .get(key)?
        .as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings() {
        assert_eq!(reading(b"42"), Some(42.0));
        assert_eq!(reading(br#"{"value": -1.5, "unit": "C"}"#), Some(-1.5));
        assert_eq!(reading(b"\"42\""), None);
        assert_eq!(reading(br#"{"value": "x"}"#), None);
        assert_eq!(reading(b"[1]"), None);
        assert_eq!(reading(b"garbage"), None);
    }

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Cfg {
        n: u32,
    }

    #[test]
    fn configs() {
        assert_eq!(config::<Cfg>(""), Ok(Cfg { n: 0 }));
        assert_eq!(config::<Cfg>(r#"{"n": 3}"#), Ok(Cfg { n: 3 }));
        assert!(config::<Cfg>(r#"{"m": 3}"#).is_err());
    }

    #[test]
    fn config_numbers() {
        assert_eq!(config_number(r#"{"handles": 10}"#, "handles"), Some(10));
        assert_eq!(config_number(r#"{"handles": "x"}"#, "handles"), None);
        assert_eq!(config_number("", "handles"), None);
    }

    /// The complete module in `wasm-modules/README.md` is `examples/too_hot.rs`, which
    /// `cargo test` compiles: the README's module builds as written.
    #[test]
    fn the_readme_module_is_this_example() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("## Writing a module in Rust")
            .and_then(|at| {
                readme[at..]
                    .find("```rust\n")
                    .map(|i| at + i + "```rust\n".len())
            })
            .expect("the README has the section and its code block");
        let end = start + readme[start..].find("```\n").expect("the block ends");
        let example = include_str!("../examples/too_hot.rs");
        assert!(
            example.starts_with(&readme[start..end]),
            "wasm-modules/README.md and sdk/examples/too_hot.rs differ"
        );
    }
}
