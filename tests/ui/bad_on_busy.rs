#[pals::exclusive(on_busy = "wait")]
fn job() -> Result<(), pals::Error> {
    Ok(())
}

fn main() {}
