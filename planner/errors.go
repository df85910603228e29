package planner

import "errors"

// Sentinel errors. Solve and the lookup functions wrap them with %w and a
// sentence that says what was wrong; test with errors.Is.
var (
	// ErrUnknownModel reports a model name that is not in the catalog.
	ErrUnknownModel = errors.New("planner: unknown model")
	// ErrUnknownAccelerator reports an accelerator name that is not in the catalog.
	ErrUnknownAccelerator = errors.New("planner: unknown accelerator")
	// ErrUnknownQuantization reports a quantization name that ParseQuantization does not accept.
	ErrUnknownQuantization = errors.New("planner: unknown quantization")
	// ErrInvalidRequest reports a request that no search could answer: a
	// malformed model shape, accelerator, target or override.
	ErrInvalidRequest = errors.New("planner: invalid request")
	// ErrInfeasible reports targets that no candidate meets. The wrapping
	// message says what would be needed (more memory, a looser bound, ...).
	ErrInfeasible = errors.New("planner: no deployment meets the targets")
	// ErrInvalidCalibration reports a calibration file that cannot be used.
	ErrInvalidCalibration = errors.New("planner: invalid calibration")
)
