//! Ctrl-C ([`thermoflow::observe::request_stop`], as the command line's handler sets it) stops
//! long work at its next step. In a test binary of its own: the request is process-wide and
//! would stop the other tests' work too.

use thermoflow::flows::default_flow;
use thermoflow::mcmc::{parallel_tempering, PtConfig};
use thermoflow::observe::{clear_stop, request_stop};
use thermoflow::systems;
use thermoflow::train::{train_new, TrainConfig};

/// Parallel tempering ends with its "interrupted" error instead of running its sweeps (the
/// sweep's tempering and witness then count as not run); training whose forward-KL data it was
/// making goes on without them and stops at its first step; without the request both complete.
#[test]
fn a_stop_request_ends_parallel_tempering_and_the_training_it_feeds() {
    let e = systems::build("double-well-2d", &["c=1"]).unwrap();
    let mut pt = PtConfig::geometric(0.5, 3.0, 4);
    pt.n_sweeps = 2000;
    let mut tc = TrainConfig::new(0.5, 3.0);
    tc.pt_sweeps = 2000;
    tc.forward_weight = 1.0;
    tc.steps = Some(20);
    assert!(parallel_tempering(e.as_ref(), &pt).is_ok());
    let (_, report) = train_new(e.as_ref(), &default_flow(), &tc, &mut []).unwrap();
    assert_eq!(report.steps, 20);
    assert!(report.data_seconds > 0.0);

    request_stop();
    let stopped = parallel_tempering(e.as_ref(), &pt);
    let (_, report) = train_new(e.as_ref(), &default_flow(), &tc, &mut []).unwrap();
    clear_stop();
    let err = stopped.unwrap_err();
    assert!(
        matches!(err, thermoflow::Error::Interrupted(_)),
        "an interruption, not a failure: {err}"
    );
    assert_eq!(report.steps, 0);
    assert_eq!(report.data_seconds, 0.0);
}
