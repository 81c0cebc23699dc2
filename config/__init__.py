"""The starter configuration (sources, ranking defaults, sample profiles and the bundled sample
feed), shipped in the wheel as `digest.starter`: `digest init` lays it out in a new project."""
