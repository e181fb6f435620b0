//! The global locker set by `pals::init`. Its own test binary: the global is process-wide.

#[test]
fn init_sets_the_global_locker_once() {
    let app = pals_tests::unique_app("init");
    pals::init(pals_tests::locker(&app)).unwrap();
    assert_eq!(pals::global().unwrap().app(), app);
    let err = pals::init(pals_tests::locker("second")).unwrap_err();
    assert!(matches!(err, pals::Error::AlreadyInitialized));
    assert_eq!(
        err.to_string(),
        "the global pals locker is already set; pals::init may be called once, before first use"
    );
    assert_eq!(pals::global().unwrap().app(), app);
}
