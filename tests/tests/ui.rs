//! Compile errors of `#[pals::exclusive]`: each points at the bad argument and says what to
//! write instead. The expected messages are the `.stderr` files beside the cases in `ui/`.
//! And the forms that must compile, in `ui/pass/` (built and run; none touches a database).

#[test]
fn bad_attribute_input_is_a_precise_compile_error_and_good_input_compiles() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/*.rs");
    cases.pass("ui/pass/*.rs");
}
