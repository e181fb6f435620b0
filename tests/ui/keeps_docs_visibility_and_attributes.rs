//! The attribute keeps what is written around the function: its doc comment (no
//! `missing_docs` error for it), its visibility (callable from outside its module), and
//! its other attributes (`#[must_use]` still applies). The errors expected are the ones
//! these keep: the function written without a doc comment, and the unused result.
#![deny(missing_docs, unused_must_use)]

/// Jobs.
pub mod jobs {
    /// Documented: no `missing_docs` error.
    #[must_use]
    #[pals::exclusive(name = "kept", on_busy = "skip")]
    pub fn documented() -> Option<u32> {
        Some(1)
    }

    #[pals::exclusive(name = "undocumented", on_busy = "skip")]
    pub fn undocumented() -> Option<u32> {
        Some(2)
    }
}

fn main() {
    jobs::documented();
    let _ = jobs::undocumented();
}
