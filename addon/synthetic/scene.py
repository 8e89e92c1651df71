"""Blender scene for a synthetic capture: skinned MakeHuman body, aim rig, materials, lights, cameras.

All maths (shape, bone placement, regions, joint rules, motion, cameras) comes from
``engine.synthetic.body`` / ``engine.scene.camera_ring``; this module only turns those arrays into Blender data.
"""

from __future__ import annotations

import bpy
import numpy as np
from mathutils import Matrix

from engine.geometry.camera import to_blender
from engine.scene.compositing import srgb_to_linear
from engine.body.joint_sets import BODY_25B
from engine.synthetic.body import AIM_BONES, JOINT_SOURCES, REGIONS, Body


def reset_scene() -> bpy.types.Scene:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context.scene


# ---------------------------------------------------------------------- render settings
def configure_render(scene, samples: int, seed: int, threads: int = 0) -> dict:
    """Cycles on the CPU, few samples, OpenImageDenoise when this build has it; colours kept as is."""
    scene.render.engine = "CYCLES"
    cy = scene.cycles
    cy.device = "CPU"
    cy.samples = int(samples)
    cy.use_adaptive_sampling = False  # fixed cost and fully deterministic
    cy.seed = int(seed)
    cy.max_bounces = 4
    cy.diffuse_bounces = 2
    cy.glossy_bounces = 1
    cy.transmission_bounces = 0
    cy.transparent_max_bounces = 2
    cy.use_auto_tile = False
    denoiser = "none"
    try:
        import _cycles

        if getattr(_cycles, "with_openimagedenoise", False):
            cy.use_denoising = True
            cy.denoiser = "OPENIMAGEDENOISE"
            # measured on 256x256: HIGH quality costs ~5x the CPU of BALANCED with a FAST
            # prefilter (1.2 vs 0.24 CPU-s per view) for no visible gain at this size
            cy.denoising_quality = "BALANCED"
            cy.denoising_prefilter = "FAST"
            denoiser = "OPENIMAGEDENOISE"
        else:
            cy.use_denoising = False
    except (ImportError, TypeError, AttributeError):
        cy.use_denoising = False
    scene.render.film_transparent = True  # alpha = person coverage -> masks
    if threads > 0:
        scene.render.threads_mode = "FIXED"
        scene.render.threads = threads
    # 'Standard' keeps colours as they are (AgX would shift pure colours); PNG is sRGB 8-bit
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    scene.display_settings.display_device = "sRGB"
    settings = scene.render.image_settings
    settings.file_format = "PNG"
    settings.color_mode = "RGBA"
    settings.color_depth = "8"
    settings.compression = 15
    scene.render.resolution_percentage = 100
    scene.render.use_persistent_data = True  # keep shaders/BVH parts between the many renders
    return {"engine": "CYCLES", "device": "CPU", "samples": int(samples), "denoiser": denoiser}


# ---------------------------------------------------------------------- materials
def _principled(name, colour, roughness=0.5):
    mat = bpy.data.materials.new(name)
    if bpy.app.version < (5, 0, 0):  # 5.0 always uses nodes and deprecates the switch
        mat.use_nodes = True
    nt = mat.node_tree
    bsdf = nt.nodes.get("Principled BSDF")
    bsdf.inputs["Base Color"].default_value = (*_srgb_to_linear(colour), 1.0)
    bsdf.inputs["Roughness"].default_value = roughness
    return mat, nt, bsdf


def _srgb_to_linear(c):
    return tuple(float(v) for v in srgb_to_linear(c, dtype=np.float64))


def _pattern(nt, bsdf, kind, colour_a, colour_b, scale):
    """Mix two colours with a procedural pattern on the undeformed ('Generated') coordinates,
    so the pattern stays on the cloth while the body moves."""
    coords = nt.nodes.new("ShaderNodeTexCoord")
    mix = nt.nodes.new("ShaderNodeMix")
    mix.data_type = "RGBA"
    # the Mix node has float/vector/colour variants of each socket: pick the colour ones by identifier
    sock = {s.identifier: s for s in mix.inputs}
    sock["A_Color"].default_value = (*_srgb_to_linear(colour_a), 1.0)
    sock["B_Color"].default_value = (*_srgb_to_linear(colour_b), 1.0)
    factor = sock["Factor_Float"]
    if kind == "stripes":
        tex = nt.nodes.new("ShaderNodeTexWave")
        tex.wave_type = "BANDS"
        tex.bands_direction = "Z"
        tex.inputs["Scale"].default_value = scale
        ramp = nt.nodes.new("ShaderNodeMath")
        ramp.operation = "GREATER_THAN"
        ramp.inputs[1].default_value = 0.5
        nt.links.new(coords.outputs["Generated"], tex.inputs["Vector"])
        nt.links.new(tex.outputs["Fac"], ramp.inputs[0])
        nt.links.new(ramp.outputs[0], factor)
    elif kind == "checks":
        tex = nt.nodes.new("ShaderNodeTexChecker")
        tex.inputs["Scale"].default_value = scale
        tex.inputs["Color1"].default_value = (0, 0, 0, 1)
        tex.inputs["Color2"].default_value = (1, 1, 1, 1)
        nt.links.new(coords.outputs["Generated"], tex.inputs["Vector"])
        nt.links.new(tex.outputs["Fac"], factor)
    else:  # "noise": subtle mottling (denim, hair)
        tex = nt.nodes.new("ShaderNodeTexNoise")
        tex.inputs["Scale"].default_value = scale
        tex.inputs["Detail"].default_value = 4.0
        nt.links.new(coords.outputs["Generated"], tex.inputs["Vector"])
        nt.links.new(tex.outputs["Fac"], factor)
    result = {s.identifier: s for s in mix.outputs}["Result_Color"]
    nt.links.new(result, bsdf.inputs["Base Color"])


def make_materials(look) -> list:
    mats = {}
    mats["skin"], _, _ = _principled("skin", look.skin, 0.55)
    m, nt, bsdf = _principled("shirt", look.shirt, 0.8)
    if look.shirt_pattern != "plain":
        _pattern(nt, bsdf, look.shirt_pattern, look.shirt, look.shirt_second, 9.0 if look.shirt_pattern == "stripes"
                 else 8.0)
    mats["shirt"] = m
    m, nt, bsdf = _principled("trousers", look.trousers, 0.85)
    _pattern(nt, bsdf, "noise", look.trousers, tuple(min(1.0, c * 1.4 + 0.03) for c in look.trousers), 60.0)
    mats["trousers"] = m
    mats["shoes"], _, _ = _principled("shoes", look.shoes, 0.4)
    m, nt, bsdf = _principled("hair", look.hair, 0.6)
    _pattern(nt, bsdf, "noise", look.hair, tuple(min(1.0, c * 1.6 + 0.02) for c in look.hair), 120.0)
    mats["hair"] = m
    mats["eyes"], _, _ = _principled("eyes", (0.18, 0.12, 0.09), 0.15)
    return [mats[r] for r in REGIONS]


# ---------------------------------------------------------------------- body and rig
def build_body_objects(body: Body):
    """Mesh object (skinned) and armature object (MakeHuman rig + aim bones with Damped Tracks)."""
    scene = bpy.context.scene
    me = bpy.data.meshes.new("body")
    me.from_pydata(body.verts.tolist(), [], [f.tolist() for f in body.faces])
    me.update()
    for mat in make_materials(body.look):
        me.materials.append(mat)
    me.polygons.foreach_set("material_index", body.face_region.astype(np.int32))
    me.polygons.foreach_set("use_smooth", np.ones(len(me.polygons), dtype=bool))
    mesh_obj = bpy.data.objects.new("body", me)
    scene.collection.objects.link(mesh_obj)

    arm = bpy.data.armatures.new("rig")
    arm_obj = bpy.data.objects.new("rig", arm)
    scene.collection.objects.link(arm_obj)
    bpy.context.view_layer.objects.active = arm_obj
    bpy.ops.object.mode_set(mode="EDIT")
    ebs = {}
    for name, b in body.bones.items():
        eb = arm.edit_bones.new(name)
        eb.head, eb.tail = b["head"].tolist(), b["tail"].tolist()
        if np.linalg.norm(b["tail"] - b["head"]) < 1e-5:  # degenerate bones vanish in Blender
            eb.tail = (b["head"] + np.array([0, 0, 1e-3])).tolist()
        eb.roll = b["roll"]
        eb.use_deform = b["deform"]
        ebs[name] = eb
    for name, b in body.bones.items():
        if b["parent"]:
            ebs[name].parent = ebs[b["parent"]]
            ebs[name].use_connect = b["connect"]
    bpy.ops.object.mode_set(mode="OBJECT")

    for bone, (vi, w) in body.weights.items():
        vg = mesh_obj.vertex_groups.new(name=bone)
        # one add() per distinct weight value keeps this at a few thousand calls
        order = np.argsort(w)
        ws, vs = w[order], vi[order]
        cuts = np.flatnonzero(np.diff(ws)) + 1
        for chunk_w, chunk_v in zip(np.split(ws, cuts), np.split(vs, cuts)):
            vg.add(chunk_v.tolist(), float(chunk_w[0]), "REPLACE")
    # the Armature modifier deforms in the armature's own space: parent the mesh so it also
    # follows the armature object's transform (the root motion)
    mesh_obj.parent = arm_obj
    mesh_obj.matrix_parent_inverse.identity()
    mod = mesh_obj.modifiers.new("armature", "ARMATURE")
    mod.object = arm_obj
    mod.use_deform_preserve_volume = False

    # one empty per BODY_25B joint target; aim bones track theirs
    targets = {}
    for name in BODY_25B.names:
        e = bpy.data.objects.new(f"target_{name}", None)
        scene.collection.objects.link(e)
        targets[name] = e
    for aim, (_, tail_joint, _, _) in AIM_BONES.items():
        con = arm_obj.pose.bones[aim].constraints.new("DAMPED_TRACK")
        con.target = targets[tail_joint]
        con.track_axis = "TRACK_Y"
    return mesh_obj, arm_obj, targets


def pose_frame(arm_obj, targets, root_matrix: np.ndarray, target_joints: np.ndarray, active: np.ndarray) -> None:
    """Place the armature and the targets for one frame; ``active`` [25] bool switches aims off
    where the motion has no target (that segment then follows its parent)."""
    arm_obj.matrix_world = Matrix(root_matrix.tolist())
    for j, name in enumerate(BODY_25B.names):
        if active[j]:
            targets[name].location = target_joints[j].tolist()
    for aim, (_, tail_joint, _, _) in AIM_BONES.items():
        arm_obj.pose.bones[aim].constraints[0].mute = not bool(active[BODY_25B.index(tail_joint)])
    bpy.context.view_layer.update()


def read_joints(mesh_obj, arm_obj, body: Body) -> np.ndarray:
    """BODY_25B joints [25, 3] of the posed body (bones of the evaluated armature, vertices of
    the evaluated mesh), per ``engine.synthetic.body.JOINT_SOURCES``."""
    dg = bpy.context.evaluated_depsgraph_get()
    arm_eval = arm_obj.evaluated_get(dg)
    mw = np.array(arm_eval.matrix_world)
    mesh_eval = mesh_obj.evaluated_get(dg)
    me = mesh_eval.to_mesh()
    co = np.empty(len(me.vertices) * 3, dtype=np.float32)
    me.vertices.foreach_get("co", co)
    mesh_eval.to_mesh_clear()
    co = co.reshape(-1, 3).astype(np.float64)
    mmw = np.array(mesh_eval.matrix_world)
    out = np.zeros((BODY_25B.num_joints, 3))
    for j, name in enumerate(BODY_25B.names):
        kind, src = JOINT_SOURCES[name]
        if kind == "vertex":
            p = co[body.joint_vertices[src]]
            out[j] = mmw[:3, :3] @ p + mmw[:3, 3]
        else:
            pb = arm_eval.pose.bones[src]
            p = np.array(pb.head if kind == "bone_head" else pb.tail)
            out[j] = mw[:3, :3] @ p + mw[:3, 3]
    return out


# ---------------------------------------------------------------------- lights and cameras
def add_lights(scene) -> None:
    world = bpy.data.worlds.new("world")
    if bpy.app.version < (5, 0, 0):
        world.use_nodes = True
    bg = world.node_tree.nodes.get("Background")
    bg.inputs["Color"].default_value = (0.55, 0.6, 0.68, 1.0)
    bg.inputs["Strength"].default_value = 0.45
    scene.world = world
    sun = bpy.data.lights.new("sun", "SUN")
    sun.energy = 2.5
    sun.angle = np.radians(8.0)
    sun_obj = bpy.data.objects.new("sun", sun)
    sun_obj.rotation_euler = (np.radians(40), np.radians(10), np.radians(30))
    scene.collection.objects.link(sun_obj)
    for name, loc, energy in (("key", (2.5, -2.5, 3.0), 600.0), ("fill", (-3.0, 1.5, 2.0), 250.0)):
        light = bpy.data.lights.new(name, "AREA")
        light.energy = energy
        light.size = 1.5
        obj = bpy.data.objects.new(name, light)
        obj.location = loc
        direction = -np.asarray(loc) + np.array([0, 0, 1.0])
        obj.rotation_euler = _track_euler(direction)
        scene.collection.objects.link(obj)


def _track_euler(direction):
    from mathutils import Vector

    return Vector(direction.tolist()).to_track_quat("-Z", "Y").to_euler()


def add_camera(scene, camera):
    """A Blender camera reproducing an ``engine.geometry.camera.Camera`` (no distortion)."""
    p = to_blender(camera)
    data = bpy.data.cameras.new(camera.name)
    data.lens = p["lens"]
    data.sensor_width = p["sensor_width"]
    data.sensor_height = p["sensor_height"]
    data.sensor_fit = p["sensor_fit"]
    data.shift_x, data.shift_y = p["shift_x"], p["shift_y"]
    data.clip_start, data.clip_end = 0.05, 100.0
    obj = bpy.data.objects.new(camera.name, data)
    obj.matrix_world = Matrix(p["matrix_world"])
    scene.collection.objects.link(obj)
    return obj, p
