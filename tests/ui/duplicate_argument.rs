#[pals::exclusive(timeout = "1s", timeout = "2s")]
fn job() -> Result<(), pals::Error> {
    Ok(())
}

fn main() {}
