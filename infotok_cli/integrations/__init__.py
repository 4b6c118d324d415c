"""Integrations with other systems: tokenizing datasets on a Ray cluster (`ray_data`, needs the `ray`
extra). May import everything below it (the library); nothing from cli."""
