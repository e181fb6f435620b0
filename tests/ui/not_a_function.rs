#[pals::exclusive(name = "job")]
struct Job;

fn main() {}
