//! Device and dtype as a user writes them (`cpu | cuda | cuda:N | auto`, `auto | f32 | f16 | bf16`).

use std::str::FromStr;

use anyhow::{bail, Result};
use tch::{Device, Kind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    Cpu,
    Cuda(usize),
    /// The first CUDA device when one is available, else the CPU.
    #[default]
    Auto,
}

impl DeviceChoice {
    pub fn resolve(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(index) => {
                let count = tch::Cuda::device_count();
                if (index as i64) >= count {
                    bail!("device cuda:{index} requested but {count} CUDA device(s) are available");
                }
                Ok(Device::Cuda(index))
            }
            Self::Auto => Ok(Device::cuda_if_available()),
        }
    }
}

impl From<Device> for DeviceChoice {
    /// The choice that resolves to `device` (a second model on the first one's device).
    fn from(device: Device) -> Self {
        match device {
            Device::Cuda(index) => Self::Cuda(index),
            _ => Self::Cpu,
        }
    }
}

impl DtypeChoice {
    /// The choice that resolves to `kind`, for the kinds models load in.
    pub fn of_kind(kind: Kind) -> Result<Self> {
        Ok(match kind {
            Kind::Float => Self::F32,
            Kind::Half => Self::F16,
            Kind::BFloat16 => Self::Bf16,
            other => bail!("models do not load in {other:?}"),
        })
    }
}

impl FromStr for DeviceChoice {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            "auto" => Ok(Self::Auto),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(index)) => Ok(Self::Cuda(index)),
                _ => bail!("unknown device {other:?} (expected cpu, cuda, cuda:N or auto)"),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DtypeChoice {
    /// float32 on the CPU (half precision matmuls are slow there), bfloat16 on CUDA.
    #[default]
    Auto,
    F32,
    F16,
    Bf16,
}

impl DtypeChoice {
    pub fn resolve(self, device: Device) -> Result<Kind> {
        Ok(match (self, device) {
            (Self::Auto, Device::Cpu) => Kind::Float,
            (Self::Auto, _) => Kind::BFloat16,
            (Self::F32, _) => Kind::Float,
            (Self::F16, Device::Cpu) => {
                bail!("dtype f16 is not supported on the CPU (use f32, or bf16)")
            }
            (Self::F16, _) => Kind::Half,
            (Self::Bf16, _) => Kind::BFloat16,
        })
    }
}

impl FromStr for DtypeChoice {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "f32" | "float32" => Ok(Self::F32),
            "f16" | "float16" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            other => bail!("unknown dtype {other:?} (expected auto, f32, f16 or bf16)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices_and_dtypes() {
        assert_eq!(
            "cuda:1".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(1)
        );
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert!("gpu"
            .parse::<DeviceChoice>()
            .unwrap_err()
            .to_string()
            .contains("gpu"));
        assert_eq!("bf16".parse::<DtypeChoice>().unwrap(), DtypeChoice::Bf16);
        assert!("int4".parse::<DtypeChoice>().is_err());
        assert_eq!(DtypeChoice::Auto.resolve(Device::Cpu).unwrap(), Kind::Float);
        assert!(DtypeChoice::F16.resolve(Device::Cpu).is_err());
    }
}
