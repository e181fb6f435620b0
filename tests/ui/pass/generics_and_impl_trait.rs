//! Generic functions, and `impl Trait` inside a `Result`, sync and async.
use std::fmt::Display;

#[pals::exclusive(name = "generic-{value}")]
fn generic<T>(value: T) -> Result<String, pals::Error>
where
    T: Display + Send,
{
    Ok(value.to_string())
}

#[pals::exclusive(name = "generic-unit")]
async fn generic_unit<T: Send>(value: T) {
    drop(value);
}

#[pals::exclusive(name = "opaque")]
fn opaque(limit: u32) -> Result<impl Iterator<Item = u32>, pals::Error> {
    Ok(0..limit)
}

#[pals::exclusive(name = "opaque-async")]
async fn opaque_async() -> Result<impl Display, pals::Error> {
    Ok(42)
}

fn main() {
    let _: fn(u8) -> Result<String, pals::Error> = generic::<u8>;
    drop(generic_unit(1u8));
    let _ = opaque;
    drop(opaque_async());
}
