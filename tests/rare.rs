//! Rare events: importance sampling with a flow trained toward the event, against quadrature.

mod common;

use thermoflow::rare::{estimate, Event};
use thermoflow::systems;

/// The minor well of the double well at T = 0.4 holds P ≈ 5·10⁻⁶ of the mass. The flow
/// estimate must agree with quadrature within its error bar and beat crude Monte Carlo by at
/// least 100× in variance per energy evaluation.
#[test]
fn minor_well_probability_matches_quadrature() {
    let e = systems::build::<&str>("double-well-2d", &[]).unwrap();
    let r = estimate(
        e,
        Event::parse("x0>0").unwrap(),
        0.4,
        100_000,
        2000,
        common::seed(3),
        false,
    )
    .unwrap();
    let exact = r.p_exact.unwrap();
    assert!(exact <= 1e-5, "not rare enough: {exact}");
    // Measured largest |z| over THERMOFLOW_TEST_SEED = 1–6 (tests/zspread.sh): 0.1–2.8.
    assert!(
        common::within("P", r.p, r.p_se, exact, 4.0, 0.0),
        "P = {} ± {} vs exact {exact}",
        r.p,
        r.p_se
    );
    assert!(
        r.p_se < 0.2 * exact,
        "error bar too wide to mean anything: {}",
        r.p_se
    );
    assert!(
        r.variance_reduction >= 100.0,
        "variance reduction {}",
        r.variance_reduction
    );
    assert!(r.fraction_in_event > 0.5);
}

#[test]
fn bad_events_are_errors() {
    for s in ["x0", "y>1", "x0>abc", "U<3", "x9>0"] {
        let e = systems::build::<&str>("double-well-2d", &[]).unwrap();
        let ev = Event::parse(s);
        if let Ok(ev) = ev {
            assert!(estimate(e, ev, 0.4, 100, 10, 0, false).is_err(), "{s}");
        }
    }
    assert_eq!(Event::parse("x0 > 1.5").unwrap(), Event::Above(0, 1.5));
    assert_eq!(Event::parse("x1<-2").unwrap(), Event::Below(1, -2.0));
    assert_eq!(Event::parse("U>3").unwrap(), Event::EnergyAbove(3.0));
}
