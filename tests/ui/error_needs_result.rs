#[pals::exclusive(name = "job")]
fn job() -> u32 {
    1
}

#[derive(Debug)]
struct MyError;

#[pals::exclusive(name = "job", on_busy = "error")]
async fn async_job() -> Result<u32, MyError> {
    Ok(1)
}

fn main() {}
