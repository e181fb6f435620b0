//! What the benchmarks share: a measured cycle, and the plain-TCP URL.

use std::future::Future;
use std::pin::Pin;

/// One side's cycle, boxed so that sides of different types interleave.
pub type Cycle<'a> = Box<dyn FnMut() -> Pin<Box<dyn Future<Output = ()> + 'a>> + 'a>;

/// Boxes a cycle.
pub fn cycle<'a, F, Fut>(mut make: F) -> Cycle<'a>
where
    F: FnMut() -> Fut + 'a,
    Fut: Future<Output = ()> + 'a,
{
    Box::new(move || Box::pin(make()))
}

/// `url` with `sslmode=mode`, unless it names one already.
pub fn with_sslmode(url: &str, mode: &str) -> String {
    if url.contains("sslmode=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&sslmode={mode}")
    } else {
        format!("{url}?sslmode={mode}")
    }
}
