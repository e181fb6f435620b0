//! Copies the first Rust block of the README's Quick start into the program, as a user would
//! paste it: the test that runs this crate runs the Quick start as written.

use std::path::Path;

fn main() {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    println!("cargo:rerun-if-changed={}", readme.display());
    let text = std::fs::read_to_string(&readme).expect("the README");
    let quick_start = text
        .split("\n## ")
        .find(|section| section.starts_with("Quick start"))
        .expect("a Quick start section");
    let code = quick_start
        .split("```rust\n")
        .nth(1)
        .and_then(|block| block.split("\n```").next())
        .expect("a ```rust block in the Quick start");
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("quick_start.rs");
    std::fs::write(out, code).unwrap();
}
