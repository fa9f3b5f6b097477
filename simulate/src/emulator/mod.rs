//! User-space emulators of the links a board meets, for tests and measurements in real time:
//! [`radio`], a shared radio channel between serial ports (ptys), and [`wan`], a satellite
//! WAN link as a TCP proxy on loopback.

pub mod radio;
pub mod wan;
