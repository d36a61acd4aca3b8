"""What the agent has seen of an ALFWorld room this episode, as two lines of prompt text.

A prompt that remembers one step forgets where the lamp was and which receptacles the
search has already looked into; the searching expert (:class:`~envs.alfworld.expert.SearchingExpert`)
knows both, so a policy imitating it must guess. :class:`RoomMemory` keeps what the agent's
own observations showed: each receptacle it has looked into (stood at while open), with the
objects it held when last seen there, and the receptacles of the room not looked into yet.
:meth:`RoomMemory.text` is ``info["memory"]`` of :class:`~envs.alfworld.env.ALFWorldEnv`,
the ``{memory}`` slot of a prompt (:mod:`envs.prompts`). Nothing in it is hidden from the
agent: the room's receptacles are listed in the first observation, and a receptacle's
contents are printed whenever the agent arrives at it open or opens it.
"""

from __future__ import annotations

from envs.alfworld.expert import World, natural_key


class RoomMemory:
    """Receptacles looked into, in the order first seen, with what each held when last seen."""

    def __init__(self) -> None:
        #: Receptacle id -> names of the objects in it when the agent last stood at it open.
        self.contents: dict[str, list[str]] = {}

    def observe(self, world: World) -> None:
        """Record the open receptacles at the agent's location with what they hold now."""
        for receptacle in world.open_here():
            held = [world.name(obj) for obj, holder in world.inside.items() if holder == receptacle]
            self.contents[receptacle] = sorted(held, key=natural_key)

    def text(self, world: World) -> str:
        """Two lines: ``Seen: <receptacle> (<objects>), ...`` and ``Not yet seen: <receptacles>``."""
        seen = [f"{world.name(r)} ({', '.join(objects) or 'nothing'})" for r, objects in self.contents.items()]
        unseen = sorted((world.name(r) for r in world.receptacle_location if r not in self.contents), key=natural_key)
        return f"Seen: {', '.join(seen) or 'nothing'}.\nNot yet seen: {', '.join(unseen) or 'nothing'}."
