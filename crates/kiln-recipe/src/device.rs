//! Choosing a backend at run time.
//!
//! Burn 0.22 selects the backend through the [`Device`] value; which backends exist is decided at
//! compile time by this crate's cargo features (`flex`, `ndarray`, `wgpu`, `cuda`). Library code
//! never names a backend: programs turn a user string into a device with [`parse_device`].

use burn::tensor::Device;

use crate::RecipeError;

/// The backends compiled into this build, in order of preference for `cpu`.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "flex") {
        v.push("flex");
    }
    if cfg!(feature = "ndarray") {
        v.push("ndarray");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    v
}

fn not_compiled(backend: &str, feature: &str) -> RecipeError {
    let available = compiled_backends();
    RecipeError::NotCompiled {
        backend: backend.into(),
        feature: feature.into(),
        available: if available.is_empty() {
            "none".into()
        } else {
            available.join(", ")
        },
    }
}

/// Turns a user string into a device.
///
/// | string | device |
/// |---|---|
/// | `cpu` | flex (or ndarray when only that is compiled) |
/// | `flex`, `ndarray` | that CPU backend |
/// | `wgpu` | wgpu's default adapter (`CUBECL_WGPU_DEFAULT_DEVICE` overrides) |
/// | `wgpu:cpu` | a CPU adapter (e.g. Mesa lavapipe) |
/// | `wgpu:N` | the N-th discrete GPU |
/// | `cuda`, `cuda:N` | CUDA device N (default 0) |
///
/// # Errors
/// [`RecipeError::NotCompiled`] when the backend's feature is off,
/// [`RecipeError::UnknownDevice`] for anything else.
///
/// ```
/// let device = kiln_recipe::device::parse_device("cpu").unwrap();
/// assert!(!device.is_autodiff());
/// let err = kiln_recipe::device::parse_device("tpu").unwrap_err();
/// assert!(err.to_string().contains("unknown device"));
/// ```
pub fn parse_device(spec: &str) -> Result<Device, RecipeError> {
    let s = spec.trim().to_ascii_lowercase();
    let (name, arg) = match s.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (s.as_str(), None),
    };
    let index = |arg: Option<&str>| -> Result<usize, RecipeError> {
        arg.map_or(Ok(0), |a| {
            a.parse()
                .map_err(|_| RecipeError::UnknownDevice(spec.into()))
        })
    };
    match name {
        "cpu" if arg.is_none() => cpu_device(),
        "flex" if arg.is_none() => flex_device(),
        "ndarray" if arg.is_none() => ndarray_device(),
        "wgpu" => wgpu_device(arg, spec),
        "cuda" => cuda_device(index(arg)?),
        _ => Err(RecipeError::UnknownDevice(spec.into())),
    }
}

fn cpu_device() -> Result<Device, RecipeError> {
    if cfg!(feature = "flex") {
        flex_device()
    } else if cfg!(feature = "ndarray") {
        ndarray_device()
    } else {
        Err(not_compiled("cpu", "flex"))
    }
}

#[cfg(feature = "flex")]
fn flex_device() -> Result<Device, RecipeError> {
    Ok(Device::flex())
}
#[cfg(not(feature = "flex"))]
fn flex_device() -> Result<Device, RecipeError> {
    Err(not_compiled("flex", "flex"))
}

#[cfg(feature = "ndarray")]
#[allow(deprecated)]
fn ndarray_device() -> Result<Device, RecipeError> {
    Ok(Device::ndarray())
}
#[cfg(not(feature = "ndarray"))]
fn ndarray_device() -> Result<Device, RecipeError> {
    Err(not_compiled("ndarray", "ndarray"))
}

#[cfg(feature = "wgpu")]
fn wgpu_device(arg: Option<&str>, spec: &str) -> Result<Device, RecipeError> {
    use burn::tensor::DeviceKind;
    let kind = match arg {
        None | Some("default") => DeviceKind::DefaultDevice,
        Some("cpu") => DeviceKind::Cpu,
        Some(n) => DeviceKind::DiscreteGpu(
            n.parse()
                .map_err(|_| RecipeError::UnknownDevice(spec.into()))?,
        ),
    };
    Ok(Device::wgpu(kind))
}
#[cfg(not(feature = "wgpu"))]
fn wgpu_device(_arg: Option<&str>, _spec: &str) -> Result<Device, RecipeError> {
    Err(not_compiled("wgpu", "wgpu"))
}

#[cfg(feature = "cuda")]
fn cuda_device(index: usize) -> Result<Device, RecipeError> {
    Ok(Device::cuda(index))
}
#[cfg(not(feature = "cuda"))]
fn cuda_device(_index: usize) -> Result<Device, RecipeError> {
    Err(not_compiled("cuda", "cuda"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_malformed_strings() {
        assert!(matches!(
            parse_device("tpu"),
            Err(RecipeError::UnknownDevice(_))
        ));
        assert!(matches!(
            parse_device("cpu:3"),
            Err(RecipeError::UnknownDevice(_))
        ));
        assert!(matches!(
            parse_device("cuda:x"),
            Err(RecipeError::UnknownDevice(_)) | Err(RecipeError::NotCompiled { .. })
        ));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn missing_backend_says_which_feature() {
        let err = parse_device("cuda:0").unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }

    #[cfg(feature = "flex")]
    #[test]
    fn cpu_is_flex() {
        assert_eq!(parse_device("cpu").unwrap(), Device::flex());
        assert_eq!(parse_device(" FLEX ").unwrap(), Device::flex());
    }
}
