//! Helpers shared by the integration tests and the test worker binary.
