//! The ADS1115 driver against a fake I2C bus that models the chip's registers: the write
//! that starts a conversion, the OS-bit poll, the conversion read, clipping and NACKs.

use embedded_hal::i2c::{
    ErrorKind as I2cErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation,
};
use ghatta_hal::ErrorKind;
use ghatta_hal::ads1115::{Ads1115, Ads1115Input, Conversion, REG_CONFIG, REG_CONVERSION};

/// A fake chip: remembers the config written, answers the conversion it is told to.
struct FakeAds {
    address: u8,
    config: u16,
    conversion: i16,
    /// Config-register reads that still show "converting" (OS = 0).
    busy_polls: u32,
    pointer: u8,
    writes: Vec<Vec<u8>>,
}

impl FakeAds {
    fn new(conversion: i16) -> Self {
        FakeAds {
            address: 0x48,
            config: 0x8583,
            conversion,
            busy_polls: 0,
            pointer: 0,
            writes: Vec::new(),
        }
    }
}

impl ErrorType for FakeAds {
    type Error = I2cErrorKind;
}

impl I2c for FakeAds {
    fn transaction(&mut self, address: u8, ops: &mut [Operation<'_>]) -> Result<(), Self::Error> {
        if address != self.address {
            return Err(I2cErrorKind::NoAcknowledge(NoAcknowledgeSource::Address));
        }
        for op in ops {
            match op {
                Operation::Write(bytes) => {
                    self.writes.push(bytes.to_vec());
                    self.pointer = bytes[0];
                    if bytes.len() == 3 && bytes[0] == REG_CONFIG {
                        self.config = u16::from_be_bytes([bytes[1], bytes[2]]);
                    }
                }
                Operation::Read(buf) => {
                    let value = match self.pointer {
                        REG_CONFIG => {
                            if self.busy_polls > 0 {
                                self.busy_polls -= 1;
                                self.config & 0x7FFF
                            } else {
                                self.config | 0x8000
                            }
                        }
                        REG_CONVERSION => self.conversion as u16,
                        _ => 0,
                    };
                    buf.copy_from_slice(&value.to_be_bytes());
                }
            }
        }
        Ok(())
    }
}

const WATER: Conversion = Conversion {
    input: Ads1115Input::Ain1,
    full_scale_mv: 4_096,
    data_rate_sps: 860,
};

#[tokio::test]
async fn single_shot_writes_config_then_reads_conversion() {
    let mut adc = Ads1115::new(FakeAds::new(12_000), 0x48, "fake i2c 0x48");
    let mv = adc.read_mv(&WATER).await.expect("conversion");
    // 12,000 counts x 4,096 mV / 32,768 = 1,500 mV.
    assert_eq!(mv, 1_500);
    let fake = adc.release();
    // OS=1, MUX=101 (AIN1), PGA=001, MODE=1, DR=111 (860), COMP_QUE=11.
    assert_eq!(fake.writes[0], vec![REG_CONFIG, 0b1101_0011, 0b1110_0011]);
    assert_eq!(fake.writes.last(), Some(&vec![REG_CONVERSION]));
}

#[tokio::test]
async fn waits_while_converting() {
    let mut fake = FakeAds::new(-800);
    fake.busy_polls = 2;
    let mut adc = Ads1115::new(fake, 0x48, "fake");
    assert_eq!(adc.read_mv(&WATER).await, Ok(-100));
}

#[tokio::test]
async fn a_conversion_that_never_ends_is_a_timeout() {
    let mut fake = FakeAds::new(0);
    fake.busy_polls = 100;
    let mut adc = Ads1115::new(fake, 0x48, "fake");
    let e = adc.read_mv(&WATER).await.expect_err("stuck");
    assert_eq!(e.kind, ErrorKind::Timeout);
}

#[tokio::test]
async fn clipped_input_is_out_of_range_not_a_reading() {
    for raw in [i16::MAX, i16::MIN] {
        let mut adc = Ads1115::new(FakeAds::new(raw), 0x48, "fake");
        let e = adc.read_mv(&WATER).await.expect_err("clipped");
        assert_eq!(e.kind, ErrorKind::OutOfRange);
        assert!(e.detail.contains("full_scale_mv"), "{e}");
    }
}

#[tokio::test]
async fn wrong_address_is_not_found_with_advice() {
    let mut adc = Ads1115::new(FakeAds::new(0), 0x49, "/dev/i2c-1 0x49");
    let e = adc.read_mv(&WATER).await.expect_err("nack");
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(
        e.detail.contains("0x49") && e.detail.contains("i2cdetect"),
        "{e}"
    );
}
