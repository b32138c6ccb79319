//! Library code of the binaries in `tools/`: each binary is a thin `main` over a
//! module here, so the logic is unit-testable and shares the crate's types.

pub mod bench;
pub mod faults;
pub mod log_inspect;
pub mod restore;
