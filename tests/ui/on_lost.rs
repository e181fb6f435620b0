#[pals::exclusive(on_lost = "cancel")]
fn sync_job() -> Result<(), pals::Error> {
    Ok(())
}

#[pals::exclusive(on_lost = "abort")]
async fn async_job() -> Result<(), pals::Error> {
    Ok(())
}

fn main() {}
