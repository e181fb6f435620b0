//! Procedural macros for [pals](https://docs.rs/pals). Use them through the `pals` crate.
