#[pals::exclusive(name = "")]
fn job() {}

fn main() {}
