"""VM provisioning media for `debvisor hv`: NoCloud seed ISOs (`hv iso`) and
verified, resumable disk image conversion (`hv convert`)."""
