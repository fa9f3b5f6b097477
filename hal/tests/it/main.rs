//! The hal's one integration-test binary: the PZEM driver over a pseudo-terminal against a
//! meter simulator, configuration and missing-device errors, ADS1115 and relays over fake
//! buses, the simulated board and the replay board.

mod ads1115_fake;
mod board_generic;
mod config;
mod meter_sim;
mod modbus_frames;
mod pzem_pty;
mod relays_fake;
mod replay;
mod sim;
