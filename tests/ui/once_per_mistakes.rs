#[pals::exclusive(name = "job", offset = "1h")]
fn offset_alone() {}

#[pals::exclusive(name = "job", once_per = "0")]
fn no_period() {}

#[pals::exclusive(name = "job", once_per = "1h", offset = "2h")]
fn offset_beyond_the_period() {}

#[pals::exclusive(name = "job", once_per = "1h", min_hold = "5s")]
fn with_min_hold() {}

#[pals::exclusive(name = "job", once_per = "1h", permits = 2)]
fn with_permits() {}

#[pals::exclusive(name = "job", once_per = "1h")]
fn opaque() -> Result<impl Sized, pals::Error> {
    Ok(1)
}

fn main() {}
