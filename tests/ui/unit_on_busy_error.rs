// A function that returns nothing cannot report a busy lock: on_busy = "error" is refused,
// and the message says what to write instead.
#[pals::exclusive(name = "job", on_busy = "error")]
fn job() {}

#[pals::exclusive(name = "job", on_busy = "error")]
async fn async_job() -> () {}

fn main() {}
