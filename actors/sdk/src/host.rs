//! The host interface an actor sees (state, outputs) and an in-memory host for native runs.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::codec;
use crate::messages::Output;

/// What the host offers an actor while it handles one delivery.
///
/// Keys are the actor's own: the host prefixes them with the actor's id, so actors cannot see
/// each other's state.
pub trait Host {
    /// The value stored under `key`, if any.
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    /// Store `value` under `key`.
    fn set(&mut self, key: &[u8], value: &[u8]);
    /// Remove `key`.
    fn remove(&mut self, key: &[u8]);
    /// Emit one output.
    fn emit(&mut self, output: Output);
}

impl dyn Host + '_ {
    /// Decode the value under `key`; a value that does not decode reads as absent.
    pub fn get_value<T: bincode::Decode<()>>(&self, key: &[u8]) -> Option<T> {
        self.get(key).and_then(|v| codec::decode(&v))
    }

    /// Encode and store a value under `key`.
    pub fn set_value<T: bincode::Encode>(&mut self, key: &[u8], value: &T) {
        let bytes = codec::encode(value);
        self.set(key, &bytes);
    }
}

/// An in-memory host: the native twin of the wasm host, for unit tests and the native benchmark.
#[derive(Debug, Default, Clone)]
pub struct MemHost {
    /// The actor's state.
    pub state: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Outputs emitted since the last [`MemHost::take_outputs`].
    pub outputs: Vec<Output>,
}

impl MemHost {
    /// Take the outputs emitted so far.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        core::mem::take(&mut self.outputs)
    }

    /// Decode the value under `key` (same as on `dyn Host`, usable without a cast).
    pub fn get_value<T: bincode::Decode<()>>(&self, key: &[u8]) -> Option<T> {
        self.state.get(key).and_then(|v| codec::decode(v))
    }
}

impl Host for MemHost {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.state.get(key).cloned()
    }
    fn set(&mut self, key: &[u8], value: &[u8]) {
        self.state.insert(key.to_vec(), value.to_vec());
    }
    fn remove(&mut self, key: &[u8]) {
        self.state.remove(key);
    }
    fn emit(&mut self, output: Output) {
        self.outputs.push(output);
    }
}
