// Preloaded in every thermoflow notebook (see kernels/thermoflow/launch).
use thermoflow::prelude::*;
