//! Methods with every receiver, sync and async, unit and `Result`.
pub struct Service {
    locker: pals::Locker,
    runs: u32,
}

impl Service {
    #[pals::exclusive(name = "by-ref", locker = &self.locker)]
    pub fn by_ref(&self) -> Result<u32, pals::Error> {
        Ok(self.runs)
    }

    #[pals::exclusive(name = "by-mut", locker = &self.locker)]
    pub fn by_mut(&mut self) {
        self.runs += 1;
    }

    #[pals::exclusive(name = "by-value", locker = &self.locker)]
    pub fn by_value(self) -> Result<u32, pals::Error> {
        Ok(self.runs)
    }

    #[pals::exclusive(name = "async-by-ref", locker = &self.locker)]
    pub async fn async_by_ref(&self) {}

    #[pals::exclusive(name = "async-by-mut-{add}", locker = &self.locker)]
    pub async fn async_by_mut(&mut self, add: u32) -> Result<u32, pals::Error> {
        self.runs += add;
        Ok(self.runs)
    }

    #[pals::exclusive(name = "async-by-value", on_busy = "skip", locker = &self.locker)]
    pub async fn async_by_value(self) -> Option<u32> {
        Some(self.runs)
    }
}

fn main() {
    let _: fn(&Service) -> Result<u32, pals::Error> = Service::by_ref;
    let _: fn(&mut Service) = Service::by_mut;
    let _: fn(Service) -> Result<u32, pals::Error> = Service::by_value;
    let service = Service {
        locker: pals::Locker::new("app", "postgresql://127.0.0.1:1/db").unwrap(),
        runs: 0,
    };
    drop(service.async_by_ref());
    let mut service = service;
    drop(service.async_by_mut(1));
    drop(service.async_by_value());
}
