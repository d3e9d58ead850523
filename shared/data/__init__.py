"""Media I/O, sampling and dataset checks shared by the projects, plus generated demo datasets."""
