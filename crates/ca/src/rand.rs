//! Randomness from ring's system generator.

use ring::rand::{SecureRandom, SystemRandom};

use crate::CaError;

/// `N` random bytes from the operating system.
pub fn bytes<const N: usize>() -> Result<[u8; N], CaError> {
    let mut out = [0u8; N];
    SystemRandom::new().fill(&mut out).map_err(|_| CaError::Random)?;
    Ok(out)
}

/// A random `u32`, e.g. for rotation jitter.
pub fn u32() -> Result<u32, CaError> {
    bytes::<4>().map(u32::from_be_bytes)
}
