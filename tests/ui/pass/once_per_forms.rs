//! once_per on the forms people write: sync and async, methods that borrow and return
//! borrows, generic errors, `?`, fenced, and a body that returns early.
use std::fmt::Display;

struct Reports {
    last: String,
}

impl Reports {
    #[pals::exclusive(name = "report", once_per = "24h", offset = "3h")]
    fn build(&mut self, day: u32) -> Result<Option<&str>, std::io::Error> {
        if day == 0 {
            return Ok(Some(&self.last));
        }
        let text = std::fs::read_to_string("/etc/hostname")?;
        self.last = format!("{day}: {text}");
        Ok(Some(&self.last))
    }

    #[pals::exclusive(name = "report-async", once_per = "1h", fenced = true)]
    async fn publish<'a>(&'a self, to: &'a str) -> Option<&'a str> {
        let _token = pals::current_fence();
        Some(to)
    }
}

#[pals::exclusive(name = "generic", once_per = "5m")]
async fn generic<E: Display + Send>(fail: Option<E>) -> Result<(), E> {
    match fail {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

#[pals::exclusive(once_per = "1m")]
fn unit_job() {}

#[pals::exclusive(name = "outcome", once_per = "1m", timeout = "2s")]
fn outcome() -> pals::Outcome<u32> {
    pals::Outcome::Ran(1)
}

fn main() {
    let _ = Reports::build;
    let _ = Reports::publish;
    drop(generic::<String>(None));
    let _: fn() = unit_job;
    let _ = outcome;
    let _ = Reports { last: String::new() }.last;
}
