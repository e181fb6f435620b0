// A call whose tick ran already returns the skipped value, even with on_busy = "error".
#[pals::exclusive(name = "job", once_per = "1h", on_busy = "error")]
fn job() -> Result<u32, pals::Error> {
    Ok(1)
}

fn main() {}
